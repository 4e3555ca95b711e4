"""The committed Python for proto/agentmeter/v1/usage.proto: fresh, importable, and on the wire."""

import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor

from proto.agentmeter.v1 import usage_pb2, usage_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO = Path("proto/agentmeter/v1/usage.proto")
GENERATED = ("usage_pb2.py", "usage_pb2.pyi", "usage_pb2_grpc.py")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs the same protoc command as scripts/gen_proto.sh, into a temporary directory."""
    out = tmp_path_factory.mktemp("generated")
    protoc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert protoc.returncode == 0, protoc.stderr
    return out / PROTO.parent


class TestCommittedCode:
    @pytest.mark.parametrize("name", [pytest.param(name, id=name) for name in GENERATED])
    def test_matches_a_fresh_regeneration(self, regenerated: Path, name: str) -> None:
        committed = (REPO_ROOT / PROTO.parent / name).read_bytes()
        fresh = (regenerated / name).read_bytes()
        assert committed == fresh, (
            f"{PROTO.parent / name} is stale or hand-edited: run scripts/gen_proto.sh"
        )


class TestUsageServiceExport:
    def test_calls_a_real_server(self) -> None:
        """The generated stub and servicer talk over a real channel, metadata included."""
        seen: list[tuple[usage_pb2.ExportUsageRequest, dict[str, str | bytes]]] = []

        class Servicer(usage_pb2_grpc.UsageServiceServicer):
            def Export(
                self, request: usage_pb2.ExportUsageRequest, context: grpc.ServicerContext
            ) -> usage_pb2.ExportUsageResponse:
                seen.append((request, dict(context.invocation_metadata())))
                return usage_pb2.ExportUsageResponse(inserted=len(request.records))

        # protoc writes no .pyi for the grpc module; typed names keep strict mypy checking calls.
        add_servicer: Callable[[usage_pb2_grpc.UsageServiceServicer, grpc.Server], None] = (
            usage_pb2_grpc.add_UsageServiceServicer_to_server
        )
        new_stub: Callable[[grpc.Channel], usage_pb2_grpc.UsageServiceStub] = (
            usage_pb2_grpc.UsageServiceStub
        )

        server = grpc.server(ThreadPoolExecutor(max_workers=1))
        add_servicer(Servicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = new_stub(channel)
                request = usage_pb2.ExportUsageRequest(
                    records=[usage_pb2.UsageRecord(meter="tool_calls", quantity="1")]
                )
                response = stub.Export(
                    request, metadata=[("authorization", "Bearer am_test_key")], timeout=10
                )
        finally:
            server.stop(grace=None)

        assert response.inserted == 1
        [(got, metadata)] = seen
        assert got == request
        assert metadata["authorization"] == "Bearer am_test_key"


class TestUsageRecordFields:
    """Field numbers and types are the wire contract: changing one breaks deployed clients."""

    @pytest.mark.parametrize(
        ("name", "number", "type_"),
        [
            pytest.param("trace_id", 1, FieldDescriptor.TYPE_STRING, id="trace_id"),
            pytest.param("span_id", 2, FieldDescriptor.TYPE_STRING, id="span_id"),
            pytest.param("meter", 3, FieldDescriptor.TYPE_STRING, id="meter"),
            pytest.param("quantity", 4, FieldDescriptor.TYPE_STRING, id="quantity"),
            pytest.param("customer_id", 5, FieldDescriptor.TYPE_STRING, id="customer_id"),
            pytest.param("time_unix_nano", 6, FieldDescriptor.TYPE_FIXED64, id="time_unix_nano"),
            pytest.param("provider", 7, FieldDescriptor.TYPE_STRING, id="provider"),
            pytest.param("model", 8, FieldDescriptor.TYPE_STRING, id="model"),
            pytest.param("operation", 9, FieldDescriptor.TYPE_STRING, id="operation"),
            pytest.param("agent_name", 10, FieldDescriptor.TYPE_STRING, id="agent_name"),
            pytest.param("step", 11, FieldDescriptor.TYPE_STRING, id="step"),
            pytest.param("tool", 12, FieldDescriptor.TYPE_STRING, id="tool"),
            pytest.param("service_name", 13, FieldDescriptor.TYPE_STRING, id="service_name"),
            pytest.param("source", 14, FieldDescriptor.TYPE_STRING, id="source"),
            pytest.param("parent_span_id", 15, FieldDescriptor.TYPE_STRING, id="parent_span_id"),
            pytest.param("response_id", 16, FieldDescriptor.TYPE_STRING, id="response_id"),
        ],
    )
    def test_field(self, name: str, number: int, type_: int) -> None:
        field = usage_pb2.UsageRecord.DESCRIPTOR.fields_by_name[name]
        assert (field.number, field.type) == (number, type_)

    def test_has_no_other_fields(self) -> None:
        assert len(usage_pb2.UsageRecord.DESCRIPTOR.fields) == 16


class TestExportUsageRequestRoundTrip:
    def test_fields_survive_serialization(self) -> None:
        record = usage_pb2.UsageRecord(
            trace_id="0af7651916cd43dd8448eb211c80319c",
            span_id="b7ad6b7169203331",
            meter="sandbox_seconds",
            quantity="12.5",
            time_unix_nano=1_767_225_600_123_456_789,
            service_name="support-agent",
            source="custom",
        )
        request = usage_pb2.ExportUsageRequest(
            records=[record],
            trace_customers=[
                usage_pb2.TraceCustomer(
                    trace_id="0af7651916cd43dd8448eb211c80319c", customer_id="cus_42"
                )
            ],
        )

        parsed = usage_pb2.ExportUsageRequest.FromString(request.SerializeToString())

        assert parsed == request
        [got] = parsed.records
        assert got.quantity == "12.5"
        assert got.time_unix_nano == 1_767_225_600_123_456_789
        assert got.customer_id == ""  # unattributed until its trace names a customer
        assert got.meter == "sandbox_seconds"
        assert (parsed.trace_customers[0].trace_id, parsed.trace_customers[0].customer_id) == (
            "0af7651916cd43dd8448eb211c80319c",
            "cus_42",
        )

    def test_response_counts_survive_serialization(self) -> None:
        response = usage_pb2.ExportUsageResponse(
            inserted=3, duplicates=2, rejected=1, error_message="records[5]: bad quantity"
        )

        parsed = usage_pb2.ExportUsageResponse.FromString(response.SerializeToString())

        assert (parsed.inserted, parsed.duplicates, parsed.rejected, parsed.error_message) == (
            3,
            2,
            1,
            "records[5]: bad quantity",
        )
