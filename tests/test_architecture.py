"""The layering of `app/` (STYLE.md: imports point down), read from the source with `ast`.

Every import counts, wherever it stands: module level, inside a function, under
`if TYPE_CHECKING:`, relative (`from .store import x`) or absolute, and
`importlib.import_module("...")` with a literal name. The rules:

- `app/tlsrpt/` is RFC 8460 protocol code and does no I/O: it imports only the pure
  modules in `PURE` and `app.tlsrpt` itself.
- `app.resources` (the opened pool, clients and senders) is handed down from the entry
  points; only `app/main.py`, `app/cli/` and `app/api/` import it.
- `app.api` is the only package that knows HTTP; nothing below it imports it.
- An area's store (`app/<area>/store.py`, `app/<area>/*_store.py`) holds that area's SQL;
  only modules of the same area import it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What app/tlsrpt may import besides itself: computation on values in memory. Each entry
# allows its submodules too. `urllib.parse` splits and quotes rua URIs (RFC 8460 §3);
# `urllib` itself and its other submodules (`urllib.request`) stay forbidden. gzip and
# zlib compress and inflate report bodies in memory; orjson and pydantic parse and
# validate the wire JSON.
PURE = frozenset(
    {
        "__future__",
        "base64",
        "collections",
        "dataclasses",
        "datetime",
        "enum",
        "functools",
        "gzip",
        "hashlib",
        "ipaddress",
        "itertools",
        "json",
        "math",
        "re",
        "string",
        "struct",
        "typing",
        "urllib.parse",
        "uuid",
        "zlib",
        "orjson",
        "pydantic",
    }
)

# The entry points build the resources and the HTTP app; the rest is handed what it needs.
ENTRY_POINTS = ("app.main", "app.cli", "app.api")

TLSRPT_RULE = "app/tlsrpt is pure protocol code: it imports only pure modules and itself"
RESOURCES_RULE = "app.resources is imported only by app/main.py, app/cli/ and app/api/"
API_RULE = "app.api is imported only by app/api/, app/main.py and app/cli/"


@dataclass(frozen=True)
class Import:
    path: Path  # relative to the root
    line: int
    module: str  # the importing module
    source: str  # the statement as written
    # What it may import: `x` for `import x`; `x` and `x.y` for `from x import y`, as
    # `from app.resources import Resources` imports app.resources and
    # `from app.ingest import store` imports app.ingest.store.
    candidates: tuple[str, ...]


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of `from <level dots><name> import ...` written in `module`."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _imports(root: Path, path: Path) -> Iterator[Import]:
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))
    module = _module_name(root, path)
    is_package = path.name == "__init__.py"
    rel = path.relative_to(root)

    def found(node: ast.stmt | ast.expr, *candidates: str) -> Import:
        text = ast.get_source_segment(source, node) or ""
        return Import(rel, node.lineno, module, " ".join(text.split()), candidates)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield found(node, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                yield found(node, base, f"{base}.{alias.name}")
        elif (
            isinstance(node, ast.Call)
            and _called_name(node.func) in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield found(node, node.args[0].value)


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _store_area(name: str) -> str | None:
    """`app.<area>` when `name` is a store module of that area, else None."""
    parts = name.split(".")
    if len(parts) >= 3 and parts[0] == "app":
        last = parts[-1]
        if last == "store" or last.endswith("_store"):
            return f"app.{parts[1]}"
    return None


def _broken_rules(imp: Import) -> list[tuple[str, str]]:
    """(imported name, rule) for each rule the import breaks."""
    broken: dict[str, str] = {}  # rule: the first candidate that breaks it
    entry_point = any(_within(imp.module, p) for p in ENTRY_POINTS)
    if _within(imp.module, "app.tlsrpt") and not any(
        _within(c, "app.tlsrpt") or any(_within(c, pure) for pure in PURE) for c in imp.candidates
    ):
        broken[TLSRPT_RULE] = imp.candidates[0]
    for target in imp.candidates:
        if not entry_point and _within(target, "app.resources"):
            broken.setdefault(RESOURCES_RULE, target)
        if not entry_point and _within(target, "app.api"):
            broken.setdefault(API_RULE, target)
        area = _store_area(target)
        if area is not None and not _within(imp.module, area):
            broken.setdefault(f"{target} is {area}'s SQL: only modules of {area} import it", target)
    return [(target, rule) for rule, target in broken.items()]


def violations(root: Path) -> list[str]:
    """Every broken rule in `root/app`, one line each: where, which import, which rule."""
    if not (root / "app").is_dir():
        raise FileNotFoundError(root / "app")
    found: list[str] = []
    for path in sorted((root / "app").rglob("*.py")):
        for imp in _imports(root, path):
            for target, rule in _broken_rules(imp):
                line = f"{imp.path}:{imp.line}: {imp.module} imports {target} "
                line += f"(`{imp.source}`): {rule}"
                # `from x import a, b` is one Import per name: `x` breaks a rule once.
                if line not in found:
                    found.append(line)
    return found


def test_app_follows_the_layering() -> None:
    found = violations(ROOT)
    assert not found, "\n".join(found)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_each_forbidden_import_is_reported(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/resources.py": "",
            "app/main.py": "from app.resources import Resources\nfrom app.api import ingest\n",
            "app/api/ingest.py": "from app.resources import Resources\n",
            "app/cli/serve.py": "import app.resources\nfrom app.api.errors import x\n",
            "app/tlsrpt/__init__.py": "",
            "app/tlsrpt/model.py": "import re\nfrom urllib.parse import urlsplit\n",
            "app/tlsrpt/x.py": "import socket\n",
            "app/tlsrpt/y.py": (
                "from typing import TYPE_CHECKING\n"
                "from . import model\n"
                "from .model import Policy\n"
                "from collections.abc import Iterator\n"
                "if TYPE_CHECKING:\n"
                "    from app.db.pool import Pool\n"
                "def f() -> None:\n"
                "    import urllib.request\n"
                "    from os import path\n"
            ),
            "app/ingest/__init__.py": "",
            "app/ingest/store.py": "",
            "app/ingest/service.py": "from . import store\nfrom app.ingest.store import x\n",
            "app/report/service.py": "from app.ingest.store import x\n",
            "app/report/views.py": (
                "from app.ingest import store as ingest_store\n"
                "def f() -> None:\n"
                "    from ..delivery import suppression_store\n"
            ),
            "app/delivery/service.py": "import app.resources\n",
            "app/delivery/attempt.py": "import importlib\nimportlib.import_module('app.api.x')\n",
            "app/delivery/suppression.py": "from . import suppression_store as store\n",
        },
    )
    found = violations(tmp_path)

    def reported(module: str, target: str, rule: str) -> bool:
        return any(f" {module} imports {target} (" in line and rule in line for line in found)

    expected = [
        ("app.tlsrpt.x", "socket", TLSRPT_RULE),
        ("app.tlsrpt.y", "app.db.pool", TLSRPT_RULE),
        ("app.tlsrpt.y", "urllib.request", TLSRPT_RULE),
        ("app.tlsrpt.y", "os", TLSRPT_RULE),
        ("app.report.service", "app.ingest.store", "app.ingest's SQL"),
        ("app.report.views", "app.ingest.store", "app.ingest's SQL"),
        ("app.report.views", "app.delivery.suppression_store", "app.delivery's SQL"),
        ("app.delivery.service", "app.resources", RESOURCES_RULE),
        ("app.delivery.attempt", "app.api.x", API_RULE),
    ]
    for module, target, rule in expected:
        assert reported(module, target, rule), (module, target, rule, found)
    # Nothing else: the entry points, an area's own store, relative imports within
    # app/tlsrpt and the pure modules are allowed.
    assert len(found) == len(expected), "\n".join(found)
    assert (
        f"app/tlsrpt/x.py:1: app.tlsrpt.x imports socket (`import socket`): {TLSRPT_RULE}" in found
    )
