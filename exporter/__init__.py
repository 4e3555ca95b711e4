"""Where usage goes: the SQL store, the UsageService (gRPC) client and server, and an
in-process OTel `SpanExporter`."""

from exporter.span_exporter import UsageSpanExporter

__all__ = ["UsageSpanExporter"]
