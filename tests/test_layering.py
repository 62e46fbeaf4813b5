"""The layering of docs/architecture.md, enforced: every import statement in facelab/ and bench/
(module level and inside functions) is parsed with ``ast``; an import from a higher layer, an import
between two topic modules, a cycle, or a private name (``_x``) taken from another module fails."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module may import its own layer (without cycles) and the layers below it; the
# topic modules may not import each other (they share the core). The package facade
# (facelab/__init__.py) sits above the library, below the tools, so nothing in the library imports it.
LAYERS = {
    "base": ("facelab.utils", "facelab.imaging", "facelab.geometry", "facelab.latents", "facelab.safeload"),
    "nets": ("facelab.nets",),
    "core": ("facelab.hub", "facelab.nvidia", "facelab.faces", "facelab.metrics", "facelab.projector", "facelab.viz",
             "facelab.widgets", "facelab.claims", "facelab.photos"),
    "world": ("facelab.worlds",),
    "topic": ("facelab.interpret", "facelab.invert", "facelab.pti", "facelab.mapper", "facelab.encoder"),
    "package": ("facelab",),
    "tools": ("facelab.train", "facelab.cli", "facelab.__main__", "bench"),
}
RANK = {layer: i for i, layer in enumerate(LAYERS)}
NO_SIBLINGS = {"topic"}

# (importer, imported): allowed although upward, each with its reason and owner.
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def sources() -> dict[str, Path]:
    files = sorted((ROOT / "facelab").rglob("*.py")) + sorted((ROOT / "bench").glob("*.py"))
    return {module_name(p): p for p in files}


SOURCES = sources()


def layer_of(module: str) -> str:
    best = max((prefix for prefixes in LAYERS.values() for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layering.py: add it to LAYERS")
    return next(layer for layer, prefixes in LAYERS.items() if best in prefixes)


def _target(package: str, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <node.module> import ...`` written in ``package``."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported facelab module, names taken from it, line) for every import statement in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "facelab"]
        elif isinstance(node, ast.ImportFrom):
            target = _target(package, node)
            if target.split(".")[0] != "facelab":
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in SOURCES]
            found += [(s, [], node.lineno) for s in submodules]
            rest = [n for n in names if f"{target}.{n}" not in SOURCES]
            if rest or not submodules:
                found.append((target, rest, node.lineno))
    return found


def module_aliases(path: Path, module: str) -> dict[str, str]:
    """Local names bound to facelab modules (``from facelab import pti``, ``import facelab.metrics as M``)."""
    aliases = {}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("facelab") and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            target = _target(package, node)
            for a in node.names:
                if f"{target}.{a.name}" in SOURCES:
                    aliases[a.asname or a.name] = f"{target}.{a.name}"
    return aliases


def edges() -> list[tuple[str, str, list[str], int]]:
    out = []
    for module, path in SOURCES.items():
        for target, names, line in imports(module, path):
            if target != module:
                out.append((module, target, names, line))
    return out


def test_every_module_has_a_layer():
    for module in SOURCES:
        layer_of(module)


def test_no_upward_import_and_no_topic_imports_another():
    bad = []
    for src, dst, _, line in edges():
        if dst not in SOURCES or (src, dst) in ALLOWED:
            continue
        a, b = layer_of(src), layer_of(dst)
        if RANK[b] > RANK[a]:
            bad.append(f"{SOURCES[src].relative_to(ROOT)}:{line}: {src} ({a}) imports {dst} ({b}), a higher layer")
        elif a == b and a in NO_SIBLINGS:
            bad.append(f"{SOURCES[src].relative_to(ROOT)}:{line}: topic module {src} imports topic module {dst}; "
                       "share the core instead")
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {m: set() for m in SOURCES}
    for src, dst, _, _ in edges():
        if dst in SOURCES and (src, dst) not in ALLOWED:
            graph[src].add(dst)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for nxt in sorted(graph[m]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_private_name_is_used_across_modules():
    bad = []
    for src, dst, names, line in edges():
        bad += [f"{SOURCES[src].relative_to(ROOT)}:{line}: imports {dst}.{n}" for n in names
                if n.startswith("_") and not n.startswith("__")]
    for module, path in SOURCES.items():
        aliases = module_aliases(path, module)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and aliases[node.value.id] != module:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: uses {aliases[node.value.id]}.{node.attr}")
    assert not bad, "private helpers used across modules (make them public where they belong):\n" + "\n".join(bad)


def test_the_checker_sees_what_it_should():
    """The parser resolves relative and function-level imports (else the tests above prove nothing)."""
    found = {t for t, _, _ in imports("facelab.train.evaluate", SOURCES["facelab.train.evaluate"])}
    assert "facelab.metrics" in found  # `from ..metrics import identity_embedding` inside a function
    assert ("facelab.pti", ()) in {(t, tuple(n)) for t, n, _ in imports("bench.pti", SOURCES["bench.pti"])}
    assert layer_of("facelab.nets.attributes") == "nets" and layer_of("facelab") == "package"
    assert RANK["core"] < RANK["world"] < RANK["topic"]
    found = {t for t, _, _ in imports("facelab.worlds", SOURCES["facelab.worlds"])}
    assert "facelab.hub" in found and not found & set(LAYERS["topic"])
