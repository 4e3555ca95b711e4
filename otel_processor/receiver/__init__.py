"""The OTLP trace receiver: gRPC and HTTP transports over one `TraceIngest` service."""
