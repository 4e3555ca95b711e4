"""collector-config.yaml: a Collector config whose wiring, defaults and filter hold together.

No Collector runs here, so these tests check what a careless edit would break: components
referenced but not defined, processor order, ports that drift from AgentMeter's defaults,
a queue that is not persistent, an inline secret, a commented-out variant that no longer
parses, and (by replaying the OTTL regex the way the Collector evaluates it) a filter that
would silently drop spans AgentMeter bills.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmeter.settings import Settings
from otel_processor import conventions as conv

CONFIG_PATH = Path(__file__).resolve().parent.parent / "collector-config.yaml"
COMPONENT_KINDS = ("receivers", "processors", "exporters")
AGENTMETER_EXPORTER = "otlp/agentmeter"
LOADBALANCING_EXPORTER = "loadbalancing/agentmeter"  # the scale-out variant, commented out
USAGE_FILTER = "filter/agentmeter_usage"

# Config keys that contain "key" but name no secret; `*_file` keys name a file path.
NOT_SECRET_KEYS = frozenset({"routing_key"})
SECRET_WORDS = ("key", "token", "secret", "authorization")
ENV_SUBSTITUTION = "${env:"


def load_config() -> dict[str, Any]:
    config = yaml.safe_load(CONFIG_PATH.read_text())
    assert isinstance(config, dict)
    return config


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return load_config()


def commented_block(name: str) -> Any:
    """Parse the block between `# BEGIN commented-out: name` and its END, uncommented."""
    lines = CONFIG_PATH.read_text().splitlines()
    begin = [i for i, line in enumerate(lines) if line.strip() == f"# BEGIN commented-out: {name}"]
    end = [i for i, line in enumerate(lines) if line.strip() == f"# END commented-out: {name}"]
    assert len(begin) == 1 and len(end) == 1 and begin[0] < end[0], f"no block {name!r}"
    uncommented = []
    for line in lines[begin[0] + 1 : end[0]]:
        indent, _, rest = line.partition("#")
        assert not indent.strip(), f"uncommented line inside block {name!r}: {line!r}"
        uncommented.append(indent + rest.removeprefix(" "))
    return yaml.safe_load(textwrap.dedent("\n".join(uncommented)))


def scale_out_config() -> dict[str, Any]:
    """The config with the loadbalancing variant uncommented and swapped into the
    traces/agentmeter pipeline in place of the single-receiver exporter."""
    config = load_config()
    config["exporters"].update(commented_block(LOADBALANCING_EXPORTER))
    spec = config["service"]["pipelines"]["traces/agentmeter"]
    spec["exporters"] = [
        LOADBALANCING_EXPORTER if exporter == AGENTMETER_EXPORTER else exporter
        for exporter in spec["exporters"]
    ]
    return config


def pipeline_items(config: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(pipeline, kind, component id) for every component a pipeline references."""
    for pipeline, spec in config["service"]["pipelines"].items():
        for kind in COMPONENT_KINDS:
            for component_id in spec.get(kind) or ():
                yield pipeline, kind, component_id


def undefined_references(config: Mapping[str, Any]) -> list[str]:
    missing = [
        f"{pipeline}: {kind} {component_id!r}"
        for pipeline, kind, component_id in pipeline_items(config)
        if component_id not in (config.get(kind) or {})
    ]
    missing += [
        f"service.extensions: {extension!r}"
        for extension in config["service"].get("extensions") or ()
        if extension not in (config.get("extensions") or {})
    ]
    return missing


def secret_violations(node: Any, path: str = "") -> list[str]:
    """Paths whose value is a secret written inline instead of `${env:...}`."""
    violations: list[str] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            name = str(key).lower()
            names_secret = (
                any(word in name for word in SECRET_WORDS)
                and name not in NOT_SECRET_KEYS
                and not name.endswith("_file")
            )
            is_scalar = not isinstance(value, Mapping | list)
            if names_secret and is_scalar and ENV_SUBSTITUTION not in str(value):
                violations.append(child)
            if name == "headers" and isinstance(value, Mapping):
                violations += [
                    f"{child}.{header}"
                    for header, header_value in value.items()
                    if ENV_SUBSTITUTION not in str(header_value)
                ]
            violations += secret_violations(value, child)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            violations += secret_violations(item, f"{path}[{index}]")
    elif isinstance(node, str) and re.search(r"(?i)\bbearer\s+(?!\$\{env:)", node):
        violations.append(path)
    return sorted(set(violations))


def go_duration(text: str) -> timedelta:
    """A Go duration made of h/m/s parts, e.g. `168h` or `1h30m`."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    assert parts and text, f"not an h/m/s duration: {text!r}"
    hours, minutes, seconds = (int(part or 0) for part in parts.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


class TestPipelines:
    def test_every_referenced_component_is_defined(self, config: dict[str, Any]) -> None:
        assert undefined_references(config) == []

    def test_pipelines_carry_traces(self, config: dict[str, Any]) -> None:
        for pipeline in config["service"]["pipelines"]:
            assert pipeline.split("/")[0] == "traces", pipeline

    def test_memory_limiter_first_and_batch_last(self, config: dict[str, Any]) -> None:
        for pipeline, spec in config["service"]["pipelines"].items():
            processors = spec["processors"]
            assert processors[0] == "memory_limiter", pipeline
            assert processors[-1] == "batch", pipeline

    def test_agentmeter_pipeline_filters_before_exporting(self, config: dict[str, Any]) -> None:
        pipelines = [
            spec
            for spec in config["service"]["pipelines"].values()
            if AGENTMETER_EXPORTER in spec["exporters"]
        ]
        assert len(pipelines) == 1
        assert USAGE_FILTER in pipelines[0]["processors"]


@pytest.mark.parametrize(
    ("protocol", "port", "settings_field"),
    [
        pytest.param("grpc", 4317, "grpc_port", id="grpc"),
        pytest.param("http", 4318, "http_port", id="http"),
    ],
)
def test_receiver_ports_match_agentmeter_defaults(
    config: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
    port: int,
    settings_field: str,
) -> None:
    monkeypatch.delenv(f"AGENTMETER_{settings_field.upper()}", raising=False)
    endpoint = config["receivers"]["otlp"]["protocols"][protocol]["endpoint"]
    host, _, listen_port = endpoint.rpartition(":")

    assert host == "0.0.0.0"
    assert int(listen_port) == port == getattr(Settings(), settings_field)


class TestAgentMeterExporter:
    @pytest.fixture
    def exporter(self, config: dict[str, Any]) -> dict[str, Any]:
        exporter: dict[str, Any] = config["exporters"][AGENTMETER_EXPORTER]
        return exporter

    def test_queue_is_persisted_by_an_enabled_extension(
        self, config: dict[str, Any], exporter: dict[str, Any]
    ) -> None:
        queue = exporter["sending_queue"]
        assert queue.get("enabled", True) is True
        assert queue["storage"] in config["extensions"]
        assert queue["storage"] in config["service"]["extensions"]
        assert queue["block_on_overflow"] is True

    def test_retries_for_hours(self, exporter: dict[str, Any]) -> None:
        retry = exporter["retry_on_failure"]
        assert retry["enabled"] is True
        assert go_duration(retry["max_elapsed_time"]) >= timedelta(hours=24)

    def test_authenticates_with_the_ingest_key_from_the_environment(
        self, exporter: dict[str, Any]
    ) -> None:
        assert exporter["headers"] == {"authorization": "Bearer ${env:AGENTMETER_INGEST_KEY}"}
        assert exporter["endpoint"] == "${env:AGENTMETER_OTLP_ENDPOINT}"


def test_no_secret_is_inline(config: dict[str, Any]) -> None:
    assert secret_violations(config) == []


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        pytest.param(
            {"headers": {"authorization": "Bearer abc"}},
            ["headers.authorization"],
            id="inline bearer header",
        ),
        pytest.param({"headers": {"x-team": "red"}}, ["headers.x-team"], id="any header"),
        pytest.param({"api_key": "abc"}, ["api_key"], id="key"),
        pytest.param({"auth": {"token": "abc"}}, ["auth.token"], id="nested token"),
        pytest.param({"note": "Bearer abc"}, ["note"], id="bearer anywhere"),
        pytest.param({"api_key": "${env:API_KEY}"}, [], id="key from env"),
        pytest.param({"routing_key": "traceID"}, [], id="routing key"),
        pytest.param({"tls": {"key_file": "/etc/tls/key.pem"}}, [], id="key file path"),
    ],
)
def test_secret_check_flags_inline_secrets(node: dict[str, Any], expected: list[str]) -> None:
    assert secret_violations(node) == expected


class TestCommentedVariants:
    def test_loadbalancing_routes_by_trace_id(self, config: dict[str, Any]) -> None:
        exporter = commented_block(LOADBALANCING_EXPORTER)[LOADBALANCING_EXPORTER]

        assert exporter["routing_key"] == "traceID"
        assert len(exporter["resolver"]["static"]["hostnames"]) >= 2
        assert exporter["sending_queue"]["storage"] in config["service"]["extensions"]
        assert exporter["retry_on_failure"]["enabled"] is True
        assert secret_violations(exporter) == []

    def test_loadbalancing_swapped_into_the_pipeline_is_a_whole_config(self) -> None:
        # What docs/collector.md "Scaling out" tells ops to do, done to the file.
        config = scale_out_config()
        spec = config["service"]["pipelines"]["traces/agentmeter"]

        assert undefined_references(config) == []
        assert spec["exporters"] == [LOADBALANCING_EXPORTER]
        assert spec["processors"][0] == "memory_limiter"
        assert spec["processors"][-1] == "batch"
        assert USAGE_FILTER in spec["processors"]
        assert secret_violations(config) == []

    def test_loadbalancing_queues_on_disk_once_in_front_of_the_receivers(self) -> None:
        config = scale_out_config()
        exporter = config["exporters"][LOADBALANCING_EXPORTER]
        per_receiver = exporter["protocol"]["otlp"]

        # One persistent queue and retry loop, in front of the routing: a send that fails
        # goes back to it and is routed again once the resolver drops a dead receiver.
        assert exporter["sending_queue"]["storage"] in config["service"]["extensions"]
        assert exporter["sending_queue"]["block_on_overflow"] is True
        assert go_duration(exporter["retry_on_failure"]["max_elapsed_time"]) >= timedelta(hours=24)
        assert per_receiver["sending_queue"]["enabled"] is False
        assert per_receiver["retry_on_failure"]["enabled"] is False
        # The same authentication and transport as the single-receiver exporter.
        single = config["exporters"][AGENTMETER_EXPORTER]
        assert per_receiver["headers"] == single["headers"]
        assert per_receiver["tls"]["insecure"] == single["tls"]["insecure"]
        assert "endpoint" not in per_receiver  # the resolver names each receiver

    def test_loadbalancing_receivers_listen_on_agentmeter_grpc_port(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("AGENTMETER_GRPC_PORT", raising=False)
        resolver = scale_out_config()["exporters"][LOADBALANCING_EXPORTER]["resolver"]
        hostnames = resolver["static"]["hostnames"]

        assert len(set(hostnames)) == len(hostnames) >= 2
        ports = {int(hostname.rpartition(":")[2]) for hostname in hostnames}
        assert ports == {Settings().grpc_port}

    def test_observability_pipeline_fits_the_config(self) -> None:
        config = load_config()
        config["exporters"].update(commented_block("otlp/observability"))
        config["service"]["pipelines"].update(commented_block("traces/observability"))
        spec = config["service"]["pipelines"]["traces/observability"]

        assert undefined_references(config) == []
        assert spec["processors"][0] == "memory_limiter"
        assert spec["processors"][-1] == "batch"
        assert USAGE_FILTER not in spec["processors"]
        assert secret_violations(config) == []


# The usage filter, replayed. The Collector drops a span when the condition is true:
#   not IsMatch(Keys(attributes), "<regex>") and attributes["k"] != "v" and ...
# IsMatch JSON-encodes the key list (Go's json.Marshal: no spaces) before matching.
CONDITION = re.compile(
    r'not IsMatch\(Keys\(attributes\), "(?P<regex>(?:\\.|[^\\"])*)"\)'
    r'(?P<exemptions>(?: and attributes\["[^"]+"\] != "[^"]*")*)'
)
EXEMPTION = re.compile(r'attributes\["([^"]+)"\] != "([^"]*)"')


def usage_filter(config: Mapping[str, Any]) -> tuple[re.Pattern[str], dict[str, str]]:
    """The filter's key regex (as RE2 sees it) and the attribute values that keep a span."""
    processor = config["processors"][USAGE_FILTER]
    assert processor["error_mode"] == "ignore"
    (condition,) = processor["traces"]["span"]
    match = CONDITION.fullmatch(" ".join(condition.split()))
    assert match, f"filter condition no longer has the replayed shape: {condition}"
    literal = match["regex"]
    # OTTL unquotes strings like Go's strconv.Unquote; only \\ and \" are used here.
    assert set(re.findall(r"\\(.)", literal)) <= {"\\", '"'}, literal
    regex = re.sub(r"\\(.)", r"\1", literal)
    return re.compile(regex), dict(EXEMPTION.findall(match["exemptions"]))


def kept_by_filter(config: Mapping[str, Any], attributes: Mapping[str, str]) -> bool:
    keys_regex, exemptions = usage_filter(config)
    encoded_keys = json.dumps(list(attributes), separators=(",", ":"))
    if keys_regex.search(encoded_keys):
        return True
    return any(attributes.get(key) == value for key, value in exemptions.items())


@pytest.mark.parametrize(
    "attributes",
    [
        pytest.param(
            {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": "12"}, id="genai chat"
        ),
        pytest.param(
            {"gen_ai.operation.name": "invoke_agent", "agentmeter.customer.id": "acme"},
            id="agent span naming the customer",
        ),
        pytest.param({"http.route": "/chat", "customer.id": "acme"}, id="customer.id only"),
        pytest.param({"llm.token_count.prompt": "12"}, id="openinference llm"),
        pytest.param({"ai.usage.promptTokens": "12"}, id="vercel doGenerate"),
        pytest.param({"agentmeter.usage.web_searches": "1"}, id="custom meter"),
        pytest.param({"gen_ai.operation.name": conv.TOOL_OPERATION}, id="execute_tool"),
        pytest.param(
            {conv.OPENINFERENCE_KIND: conv.TOOL_OPENINFERENCE_KIND, "tool.name": "search"},
            id="openinference tool",
        ),
        pytest.param(
            {conv.OPENLLMETRY_KIND: conv.TOOL_OPENLLMETRY_KIND, "traceloop.entity.name": "x"},
            id="openllmetry tool",
        ),
    ],
)
def test_filter_keeps_spans_agentmeter_reads(
    config: dict[str, Any], attributes: dict[str, str]
) -> None:
    assert kept_by_filter(config, attributes)


@pytest.mark.parametrize(
    "attributes",
    [
        pytest.param({}, id="no attributes"),
        pytest.param({"http.request.method": "GET", "url.path": "/healthz"}, id="http"),
        pytest.param({"db.system.name": "postgresql"}, id="database"),
        pytest.param({"my.gen_ai.flag": "true"}, id="prefix mid-key"),
        pytest.param({"llmops.run": "1", "customer.id.hash": "x"}, id="near-miss keys"),
        pytest.param({"note": '"gen_ai.usage.input_tokens'}, id="prefix in a value"),
        pytest.param({'x","gen_ai.y': "1"}, id="quote inside a key"),
        pytest.param({conv.OPENINFERENCE_KIND: "CHAIN", "input.value": "hi"}, id="chain span"),
        pytest.param({"ai.operationId": "ai.toolCall", "ai.toolCall.name": "x"}, id="vercel"),
    ],
)
def test_filter_drops_spans_without_usage(
    config: dict[str, Any], attributes: dict[str, str]
) -> None:
    assert not kept_by_filter(config, attributes)


def _usage_keys() -> Iterator[str]:
    for keys in (
        conv.INPUT_TOKENS,
        conv.OUTPUT_TOKENS,
        conv.CACHE_READ_TOKENS,
        conv.CACHE_WRITE_TOKENS,
        conv.REASONING_TOKENS,
        conv.DEFAULT_CUSTOMER_KEYS,
    ):
        yield from keys
    yield conv.CUSTOM_METER_PREFIX + "sandbox_seconds"


@pytest.mark.parametrize("key", list(_usage_keys()))
def test_filter_keeps_every_attribute_the_receiver_bills_or_attributes_by(
    config: dict[str, Any], key: str
) -> None:
    assert kept_by_filter(config, {key: "1"})
