"""The OTLP trace receiver: gRPC and HTTP transports over one `UsageIngest` service."""
