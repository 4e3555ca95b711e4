#!/usr/bin/env bash
# Regenerates the Python for AgentMeter's wire contract (proto/agentmeter/v1/usage.proto).
# The generated usage_pb2.py, usage_pb2.pyi and usage_pb2_grpc.py are committed; never edit
# them by hand. tests/proto/test_generated.py fails when they drift from the .proto.
# Run from anywhere, with the dev dependencies (grpcio-tools) installed in the active Python.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# -I . makes the generated modules import each other as proto.agentmeter.v1.*, the path
# they are installed under.
"${PYTHON:-python}" -m grpc_tools.protoc -I . \
    --python_out=. --pyi_out=. --grpc_python_out=. \
    proto/agentmeter/v1/usage.proto
