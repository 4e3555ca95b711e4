from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageRecord(_message.Message):
    __slots__ = ("trace_id", "span_id", "meter", "quantity", "customer_id", "time_unix_nano", "provider", "model", "operation", "agent_name", "step", "tool", "service_name", "source", "parent_span_id", "response_id")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    METER_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    span_id: str
    meter: str
    quantity: str
    customer_id: str
    time_unix_nano: int
    provider: str
    model: str
    operation: str
    agent_name: str
    step: str
    tool: str
    service_name: str
    source: str
    parent_span_id: str
    response_id: str
    def __init__(self, trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., meter: _Optional[str] = ..., quantity: _Optional[str] = ..., customer_id: _Optional[str] = ..., time_unix_nano: _Optional[int] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., operation: _Optional[str] = ..., agent_name: _Optional[str] = ..., step: _Optional[str] = ..., tool: _Optional[str] = ..., service_name: _Optional[str] = ..., source: _Optional[str] = ..., parent_span_id: _Optional[str] = ..., response_id: _Optional[str] = ...) -> None: ...

class AgentSpan(_message.Message):
    __slots__ = ("trace_id", "span_id", "parent_span_id", "agent_name")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    span_id: str
    parent_span_id: str
    agent_name: str
    def __init__(self, trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., parent_span_id: _Optional[str] = ..., agent_name: _Optional[str] = ...) -> None: ...

class TraceCustomer(_message.Message):
    __slots__ = ("trace_id", "customer_id")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    customer_id: str
    def __init__(self, trace_id: _Optional[str] = ..., customer_id: _Optional[str] = ...) -> None: ...

class ExportUsageRequest(_message.Message):
    __slots__ = ("records", "trace_customers", "agent_spans")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    TRACE_CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    AGENT_SPANS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[UsageRecord]
    trace_customers: _containers.RepeatedCompositeFieldContainer[TraceCustomer]
    agent_spans: _containers.RepeatedCompositeFieldContainer[AgentSpan]
    def __init__(self, records: _Optional[_Iterable[_Union[UsageRecord, _Mapping]]] = ..., trace_customers: _Optional[_Iterable[_Union[TraceCustomer, _Mapping]]] = ..., agent_spans: _Optional[_Iterable[_Union[AgentSpan, _Mapping]]] = ...) -> None: ...

class ExportUsageResponse(_message.Message):
    __slots__ = ("inserted", "duplicates", "rejected", "error_message")
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    inserted: int
    duplicates: int
    rejected: int
    error_message: str
    def __init__(self, inserted: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[int] = ..., error_message: _Optional[str] = ...) -> None: ...
