"""The dependency rules, read from the source: the core imports no adapter, ``docker`` is
imported by the runtime alone, and the verifier by nothing but stdlib and cryptography."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from controller.settings import SHIPPED_ROOT

PACKAGE = SHIPPED_ROOT / "controller"
CORE = ["models", "lifecycle", "gate", "validation", "receipts", "ports", "errors", "untrusted",
        "records", "legacy"]
ADAPTER_LIBS = {"docker", "fastapi", "sqlite3", "cryptography", "cedarpy", "pyseccomp", "ctypes",
                "requests", "uvicorn", "httpx", "psutil", "subprocess"}
ADAPTER_MODULES = {"runtime", "store", "schema", "signing", "policy", "workspace", "images", "cli",
                   "service", "bootstrap", "profiles", "scratch"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_core_imports_no_adapter() -> None:
    for name in CORE:
        for module in imports(PACKAGE / f"{name}.py"):
            top = module.split(".")[0]
            assert top not in ADAPTER_LIBS, f"{name}.py imports {module}"
            if top == "controller":
                inner = module.split(".")[1] if "." in module else ""
                assert inner not in ADAPTER_MODULES, f"{name}.py imports adapter {module}"
                if inner == "verify":
                    assert module == "controller.verify.formats", f"{name}.py imports {module}"


def test_only_the_runtime_imports_docker() -> None:
    users = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
             if any(m.split(".")[0] == "docker" for m in imports(path))}
    assert users == {"runtime/docker.py"}


def test_verifier_imports_only_stdlib_and_cryptography() -> None:
    for path in (PACKAGE / "verify").glob("*.py"):
        for module in imports(path):
            top = module.split(".")[0]
            allowed = (top in sys.stdlib_module_names or top == "cryptography"
                       or module.startswith("controller.verify"))
            assert allowed, f"{path.name} imports {module}"
