"""The dependency rules, read from the source: an allow-list per layer (what each may import,
of ours and from outside), no import cycle (``TYPE_CHECKING`` and function-level imports
included), ``docker`` imported by the runtime alone, small modules, a small top level."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from controller.settings import SHIPPED_ROOT

PACKAGE = SHIPPED_ROOT / "controller"
MAX_LINES = 450
MAX_TOP_LEVEL = 8

# Of ours: the layers a layer may import (itself always).
BASE = {"controller", "controller.errors"}  # the root package holds the version alone
OURS: dict[str, set[str]] = {
    "controller.verify": set(),
    "controller.errors": set(),
    "controller.faults": set(),
    "controller.client": set(),
    "controller.settings": BASE,
    "controller.core": BASE | {"controller.verify.formats"},
    "controller.adapters": BASE | {"controller.core", "controller.settings", "controller.faults",
                                   "controller.verify"},
    "controller.profiles": BASE | {"controller.core", "controller.adapters"},
    "controller.service": BASE | {"controller.core", "controller.adapters", "controller.faults",
                                  "controller.profiles", "controller.verify",
                                  "controller.settings"},
    "controller.api": BASE | {"controller.core", "controller.adapters", "controller.service",
                              "controller.settings", "controller.profiles",
                              "controller.console"},
    # The web console: static assets and the routes serving them (it calls the API over HTTP).
    "controller.console": BASE | {"controller.core", "controller.settings"},
    "controller.bootstrap": BASE | {"controller.core", "controller.adapters",
                                    "controller.service", "controller.settings",
                                    "controller.profiles", "controller.api"},
    "controller.tools": BASE | {"controller.core", "controller.adapters", "controller.settings",
                                "controller.profiles", "controller.service",
                                "controller.bootstrap", "controller.verify"},
    "controller.cli": BASE | {"controller.core", "controller.adapters", "controller.settings",
                              "controller.profiles", "controller.service", "controller.tools",
                              "controller.bootstrap", "controller.api", "controller.verify",
                              "controller.client"},
}
# From outside the standard library: what a layer may import.
THIRD_PARTY: dict[str, set[str]] = {
    "controller.verify": {"cryptography"},
    "controller.errors": set(),
    "controller.faults": set(),
    "controller.client": {"httpx"},
    "controller.settings": {"pydantic", "pydantic_settings"},
    "controller.core": {"pydantic", "pydantic_core", "rfc8785"},
    "controller.adapters": {"pydantic", "pydantic_core", "docker", "cryptography", "cedarpy",
                            "psutil", "pyseccomp", "rfc8785", "yaml", "requests",
                            "prometheus_client", "opentelemetry"},
    "controller.profiles": {"pydantic", "pyseccomp", "yaml"},
    "controller.service": {"pydantic"},
    "controller.api": {"fastapi", "starlette", "anyio", "pydantic", "pydantic_core", "uvicorn",
                       "h11", "rfc8785", "opentelemetry"},
    "controller.console": {"fastapi", "starlette"},
    "controller.bootstrap": {"fastapi"},
    "controller.tools": {"pydantic", "yaml", "pyseccomp"},
    "controller.cli": {"pydantic", "uvicorn"},
}
# Only the Docker runtime talks to the engine (image building goes through it too).
DOCKER_USERS = {"adapters/runtime/docker.py", "adapters/runtime/sandbox.py"}
# The core has no I/O of its own (lifecycle rules, records and receipts are pure).
CORE_FORBIDDEN_STDLIB = {"sqlite3", "subprocess", "socket", "ctypes", "shutil", "threading"}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SHIPPED_ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (functions and
    ``TYPE_CHECKING`` blocks too), as dotted names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def ours(found: set[str], known: dict[str, Path]) -> set[str]:
    """The modules of this package among ``found`` (``from a import b`` names a module only
    when ``a.b`` is one)."""
    return {module for module in found if module in known}


def layer(module: str) -> str:
    for name in sorted(OURS, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    if module == "controller":
        return "controller"
    raise AssertionError(f"{module} belongs to no layer: add it to OURS and THIRD_PARTY")


def within(module: str, allowed: set[str]) -> bool:
    """``module`` is one of ``allowed`` or inside one (the root package only by name)."""
    return any(module == name or (name != "controller" and module.startswith(name + "."))
               for name in allowed)


def test_every_layer_imports_only_its_allow_list() -> None:
    known = modules()
    wrong = []
    for name, path in known.items():
        if name == "controller":
            continue
        own = layer(name)
        found = imports(path, name)
        wrong += [f"{name} imports {module}" for module in ours(found, known)
                  if not within(module, OURS[own] | {own})]
        for module in found:
            top = module.split(".")[0]
            if top in {"controller", "__future__"} or top in sys.stdlib_module_names:
                continue
            if top not in THIRD_PARTY[own]:
                wrong.append(f"{name} imports {module} (not allowed in {own})")
        if own == "controller.core":
            wrong += [f"{name} imports {module} (I/O in the core)" for module in found
                      if module.split(".")[0] in CORE_FORBIDDEN_STDLIB]
    assert wrong == []


def test_only_the_runtime_imports_docker() -> None:
    known = modules()
    users = {path.relative_to(PACKAGE).as_posix() for name, path in known.items()
             if any(module.split(".")[0] == "docker" for module in imports(path, name))}
    assert users == DOCKER_USERS


def test_no_import_cycle() -> None:
    known = modules()
    graph = {name: ours(imports(path, name), known) - {name, "controller"}
             for name, path in known.items()}
    cycles = strongly_connected(graph)
    assert [sorted(cycle) for cycle in cycles if len(cycle) > 1] == []


def test_the_allow_list_check_can_fail(tmp_path: Path) -> None:
    """The rules above hold a core that imports an adapter, and a loop, as wrong."""
    bad = tmp_path / "models.py"
    bad.write_text("from controller.api.routes import router\nimport sqlite3\n")
    found = imports(bad, "controller.core.models")
    assert not within("controller.api.routes", OURS["controller.core"])
    assert "sqlite3" in {module.split(".")[0] for module in found} & CORE_FORBIDDEN_STDLIB
    assert not within("controller.api.routes", {"controller"})
    components = strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert sorted(map(sorted, components)) == [["a", "b", "c"], ["d"]]


def test_modules_are_small_and_the_top_level_is_short() -> None:
    long = {path.relative_to(PACKAGE).as_posix(): lines for path in PACKAGE.rglob("*.py")
            if (lines := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm: the strongly connected components of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, set()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_verifier_imports_only_stdlib_and_cryptography() -> None:
    known = modules()
    for name, path in known.items():
        if layer(name) != "controller.verify":
            continue
        for module in imports(path, name):
            top = module.split(".")[0]
            allowed = (top in sys.stdlib_module_names or top in {"cryptography", "__future__"}
                       or module.startswith("controller.verify"))
            assert allowed, f"{name} imports {module}"
