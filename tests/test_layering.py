"""The dependency rules of DESIGN.md, enforced on every import of every module (those inside
functions too), read from the source with `ast`:

- `billing_api` → `exporter` → `otel_processor` → `proto`, never the other way;
- the foundation (`agentmeter` but its command) imports none of them; everything may import it;
- nothing but the command (`agentmeter.command`, `python -m agentmeter[.cli]`) imports
  `billing_api`;
- `stripe` is imported only under `billing_api/stripe/`;
- no module uses another package's private (`_name`) names.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agentmeter", "otel_processor", "exporter", "billing_api", "proto")
COMMAND = "command"
# The command's entry modules: `python -m agentmeter` and its earlier `python -m agentmeter.cli`.
ENTRY_MODULES = ("agentmeter.__main__", "agentmeter.cli")
FOUNDATION = "foundation"
# Which layers each layer may import (its own included).
ALLOWED = {
    "proto": {"proto"},
    FOUNDATION: {FOUNDATION},
    "otel_processor": {"otel_processor", "proto", FOUNDATION},
    "exporter": {"exporter", "otel_processor", "proto", FOUNDATION},
    "billing_api": {"billing_api", "exporter", "otel_processor", "proto", FOUNDATION},
    COMMAND: {COMMAND, "billing_api", "exporter", "otel_processor", "proto", FOUNDATION},
}
STRIPE_HOME = "billing_api.stripe"


@dataclass(frozen=True, slots=True)
class Source:
    """One module: its dotted name, whether it is a package's `__init__`, and its text."""

    module: str
    text: str
    is_package: bool = False

    @property
    def package(self) -> str:
        return self.module if self.is_package else self.module.rpartition(".")[0]


def source_tree() -> list[Source]:
    """Every module of AgentMeter's packages."""
    sources = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            module = ".".join(parts[:-1] if is_package else parts)
            sources.append(Source(module, path.read_text(encoding="utf-8"), is_package))
    return sources


SOURCES = source_tree()
PACKAGE_MODULES = {s.module for s in SOURCES if s.is_package}
MODULES = {s.module for s in SOURCES}


def layer(module: str) -> str | None:
    """The layer of one of our modules; None for a third-party one."""
    top = module.split(".")[0]
    if top == "agentmeter":
        is_command = module in ENTRY_MODULES or module.startswith("agentmeter.command")
        return COMMAND if is_command else FOUNDATION
    return top if top in PACKAGES else None


def owner_package(target: str) -> str:
    """The package whose names `from target import …` reads."""
    return target if target in PACKAGE_MODULES else target.rpartition(".")[0]


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _absolute(source: Source, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = source.package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def violations(source: Source) -> list[str]:
    """Every import in `source` that breaks a rule, as a message naming it."""
    found: list[str] = []
    aliases: dict[str, str] = {}  # a local name bound to one of our modules
    tree = ast.parse(source.text)
    here = layer(source.module)

    def check(target: str, line: int, names: tuple[str, ...] = ()) -> None:
        where = f"{source.module}:{line} imports {target}"
        theirs = layer(target)
        if here is not None and theirs is not None and theirs not in ALLOWED[here]:
            found.append(
                f"{where}: {here} may not import {theirs} (DESIGN.md: billing_api → exporter"
                " → otel_processor → proto; the foundation imports nothing above it; only"
                " agentmeter.command imports billing_api)"
            )
        if target.split(".")[0] == "stripe" and not source.module.startswith(STRIPE_HOME):
            found.append(f"{where}: only {STRIPE_HOME} imports stripe")
        if theirs is None:
            return
        outside = owner_package(target) != source.package
        private = [n for n in names if is_private(n)]
        if outside and private:
            found.append(f"{where}: private name(s) {', '.join(private)} of another package")
        private_parts = [p for p in target.split(".")[1:] if is_private(p)]
        if private_parts and target.rpartition(".")[0] != source.package:
            found.append(f"{where}: private module of another package")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check(alias.name, node.lineno)
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(source, node)
            check(target, node.lineno, tuple(a.name for a in node.names))
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
    # `module._name` on a module imported whole.
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            dotted = _dotted(node.value)
            if dotted is None:
                continue
            first, _, rest = dotted.partition(".")
            if first not in aliases:
                continue
            target = ".".join(filter(None, [aliases[first], rest]))
            if target in MODULES and owner_package(target) != source.package:
                found.append(
                    f"{source.module}:{node.lineno} uses {target}.{node.attr}:"
                    " a private name of another package"
                )
    return found


def test_every_module_keeps_the_dependency_rules() -> None:
    assert len(SOURCES) > 100, "the source tree was not found"
    broken = [message for source in SOURCES for message in violations(source)]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize(
    ("module", "text", "named"),
    [
        pytest.param(
            "agentmeter.money",
            "from billing_api.errors import ApiError\n",
            "agentmeter.money:1 imports billing_api.errors: foundation may not import billing_api",
            id="foundation-imports-billing_api",
        ),
        pytest.param(
            "agentmeter.tables",
            "def f():\n    import otel_processor.usage\n",
            "agentmeter.tables:2 imports otel_processor.usage: foundation may not import",
            id="function-level-import",
        ),
        pytest.param(
            "agentmeter.tenants",
            "from .command import cli\n",
            "agentmeter.tenants:1 imports agentmeter.command: foundation may not import command",
            id="relative-import-of-the-command",
        ),
        pytest.param(
            "exporter.sql_sink",
            "from billing_api import app\n",
            "exporter.sql_sink:1 imports billing_api: exporter may not import billing_api",
            id="exporter-imports-billing_api",
        ),
        pytest.param(
            "otel_processor.spans",
            "from exporter.keys import SqlIngestKeys\n",
            "otel_processor.spans:1 imports exporter.keys: otel_processor may not import exporter",
            id="otel_processor-imports-exporter",
        ),
        pytest.param(
            "proto.agentmeter.v1.usage_pb2",
            "import agentmeter.tables\n",
            "imports agentmeter.tables: proto may not import foundation",
            id="proto-imports-the-foundation",
        ),
        pytest.param(
            "billing_api.usage.service",
            "from agentmeter.command.cli import main\n",
            "billing_api may not import command",
            id="billing_api-imports-the-command",
        ),
        pytest.param(
            "billing_api.customers.service",
            "import stripe\n",
            "billing_api.customers.service:1 imports stripe: only billing_api.stripe imports",
            id="stripe-outside-billing_api-stripe",
        ),
        pytest.param(
            "billing_api.pricing.schemas",
            "from otel_processor.spans import _METER_NAME\n",
            "imports otel_processor.spans: private name(s) _METER_NAME of another package",
            id="private-name",
        ),
        pytest.param(
            "billing_api.pricing.schemas",
            "from otel_processor import spans\n\nspans._METER_NAME.fullmatch('x')\n",
            "billing_api.pricing.schemas:3 uses otel_processor.spans._METER_NAME",
            id="private-name-through-the-module",
        ),
        pytest.param(
            "billing_api.dashboard.pages",
            "from billing_api.web._internal import helper\n",
            "private module of another package",
            id="private-module",
        ),
    ],
)
def test_a_broken_rule_is_named(module: str, text: str, named: str) -> None:
    found = violations(Source(module, text))
    assert any(named in message for message in found), found


@pytest.mark.parametrize(
    ("module", "text"),
    [
        pytest.param("agentmeter.command.server", "from billing_api.app import create_app\n"),
        pytest.param("agentmeter.__main__", "from agentmeter.command.cli import main\n"),
        pytest.param("billing_api.stripe.gateway", "import stripe\n"),
        pytest.param("billing_api.pricing.service", "from exporter.provider_costs import x\n"),
        pytest.param("exporter.keys", "from agentmeter.tenants import key_owner\n"),
        pytest.param("otel_processor.conventions", "from agentmeter.attribution import X\n"),
        pytest.param("billing_api.invoicing.review", "from .service import _x\n"),
        pytest.param("billing_api.invoicing", "from billing_api.invoicing.service import _x\n"),
    ],
)
def test_an_allowed_import_passes(module: str, text: str) -> None:
    assert violations(Source(module, text, is_package=module == "billing_api.invoicing")) == []
