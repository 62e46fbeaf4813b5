"""The install recipes agree with each other and with the running interpreter.

facelab is installed four ways: `pip install -e '.[dev]'` (pyproject.toml, used by `make install`),
conda (environment.yml), Binder (binder/environment.yml + binder/postBuild), and for every one of
them the --no-deps packages of requirements-nodeps.txt. These tests fail, naming the file to fix,
as soon as one of them drifts from the others.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
CONDA_ENV = ROOT / "environment.yml"
BINDER_ENV = ROOT / "binder" / "environment.yml"
POSTBUILD = ROOT / "binder" / "postBuild"
NODEPS = ROOT / "requirements-nodeps.txt"

# `name==version`, optionally with extras; nothing else counts as a pin.
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*(?P<version>[^\s;#]+)$")


def normalize(name: str) -> str:
    """PEP 503 name normalisation: `Facenet_Pytorch` -> `facenet-pytorch`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pin(spec: str, where: str) -> tuple[str, str]:
    m = PIN.match(spec.strip())
    assert m, f"{where}: {spec!r} is not pinned exactly as `name==version`; fix {where}"
    return normalize(m["name"]), m["version"]


def add_pin(pins: dict[str, str], name: str, version: str, where: str) -> None:
    assert name not in pins or pins[name] == version, (
        f"{where}: {name} is pinned twice ({pins[name]} and {version}); fix {where}"
    )
    pins[name] = version


def pyproject_pins() -> dict[str, str]:
    """Pins of [project].dependencies and every optional extra, self-references excluded."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    self_name = normalize(project["name"])
    specs = [(s, "pyproject.toml [project].dependencies") for s in project.get("dependencies", [])]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        specs += [(s, f"pyproject.toml [project.optional-dependencies].{extra}") for s in reqs]
    pins: dict[str, str] = {}
    for spec, where in specs:
        if normalize(re.split(r"[\[<>=!~;\s]", spec, maxsplit=1)[0]) == self_name:
            continue  # e.g. dev = ["facelab[notebooks]"]
        add_pin(pins, *parse_pin(spec, where), where)
    return pins


def conda_pip_pins(path: Path) -> dict[str, str]:
    """Pins of the `- pip:` list of a conda environment file (a tiny parser, no pyyaml).

    The pip list is the run of `- item` lines indented deeper than the `- pip:` line; comments and
    non-pin items such as `- -e .` are skipped.
    """
    where = str(path.relative_to(ROOT))
    pins: dict[str, str] = {}
    pip_indent: int | None = None
    found = False
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()
        if re.fullmatch(r"-\s*pip\s*:", item):
            pip_indent, found = indent, True
            continue
        if pip_indent is None:
            continue
        if indent <= pip_indent or not item.startswith("- "):
            pip_indent = None  # the pip list has ended
            continue
        value = item[2:].strip().strip("'\"")
        if value.startswith("-"):  # pip options: -e ., -r file, --no-deps ...
            continue
        add_pin(pins, *parse_pin(value, where), where)
    assert found, f"{where}: no `- pip:` section found; fix {where}"
    return pins


def nodeps_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in NODEPS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            add_pin(pins, *parse_pin(line, "requirements-nodeps.txt"), "requirements-nodeps.txt")
    return pins


def test_pyproject_pins_everything_exactly():
    pins = pyproject_pins()  # parse_pin asserts `==` on every requirement
    for must in ("torch", "torchvision", "facenet-pytorch", "numpy", "pytest", "nbval", "ipykernel"):
        assert must in pins, f"pyproject.toml: {must} is not pinned in dependencies or extras"


@pytest.mark.parametrize("env_file", [CONDA_ENV, BINDER_ENV], ids=["environment.yml", "binder"])
def test_conda_environment_matches_pyproject(env_file: Path):
    where = str(env_file.relative_to(ROOT))
    expected, got = pyproject_pins(), conda_pip_pins(env_file)
    missing = {n: v for n, v in expected.items() if n not in got}
    # --no-deps packages that leak in are reported by test_nodeps_packages_stay_out_of_every_resolver.
    extra = {n: v for n, v in got.items() if n not in expected and n not in nodeps_pins()}
    differ = {n: (expected[n], got[n]) for n in expected.keys() & got.keys() if expected[n] != got[n]}
    assert not missing, f"{where}: pins from pyproject.toml missing from its pip list: {missing}; fix {where}"
    assert not extra, f"{where}: pins not in pyproject.toml: {extra}; add them to pyproject.toml or drop them from {where}"
    assert not differ, f"{where}: versions differ from pyproject.toml (pyproject, {where}): {differ}; fix {where}"
    text = env_file.read_text()
    assert re.search(r"^\s*-\s*python\s*=\s*3\.11\s*$", text, re.M), f"{where}: needs `- python=3.11`; fix {where}"


def test_nodeps_packages_stay_out_of_every_resolver():
    nodeps = nodeps_pins()
    assert "gan-face-generate" in nodeps, "requirements-nodeps.txt: must pin gan-face-generate==1.1.1"
    pins = {
        "pyproject.toml": pyproject_pins(),
        "environment.yml": conda_pip_pins(CONDA_ENV),
        "binder/environment.yml": conda_pip_pins(BINDER_ENV),
    }
    for where, got in pins.items():
        leaked = sorted(nodeps.keys() & got.keys())
        assert not leaked, (
            f"{where}: {leaked} must only be installed with --no-deps from requirements-nodeps.txt "
            f"(its metadata pulls wandb and ~40 packages); remove it from {where}"
        )


def test_postbuild_installs_facelab_and_nodeps_without_deps():
    text = POSTBUILD.read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert text.startswith("#!"), "binder/postBuild: needs a shebang line (#!/usr/bin/env bash)"
    assert any(re.match(r"set\s+-[a-z]*e", ln) for ln in lines), "binder/postBuild: needs `set -euo pipefail`"
    installs = [ln for ln in lines if re.search(r"\binstall\b", ln)]
    nodeps = [ln for ln in installs if "requirements-nodeps.txt" in ln]
    assert nodeps and all("--no-deps" in ln for ln in nodeps), (
        "binder/postBuild: must run `pip install --no-deps -r requirements-nodeps.txt`"
    )
    self_install = [ln for ln in installs if re.search(r"(-e\s+|\s)\.(\s|$|\[)", ln)]
    assert self_install and all("--no-deps" in ln for ln in self_install), (
        "binder/postBuild: must install facelab itself with `pip install --no-deps -e .`"
    )
    assert POSTBUILD.stat().st_mode & 0o111, "binder/postBuild: must be executable (chmod +x)"


def test_makefile_reads_requirements_nodeps_with_no_deps():
    text = (ROOT / "Makefile").read_text()
    recipes = [ln for ln in text.splitlines() if ln.startswith("\t")]
    hits = [ln for ln in recipes if "requirements-nodeps.txt" in ln and re.search(r"\binstall\b", ln)]
    assert hits and all("--no-deps" in ln for ln in hits), (
        "Makefile: must install requirements-nodeps.txt with `pip install --no-deps -r`"
    )


def test_installed_versions_match_pins():
    pins = {**pyproject_pins(), **nodeps_pins()}
    missing, wrong = [], {}
    for name, version in sorted(pins.items()):
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        # A local build tag (torch 2.14.1+cu130) still satisfies ==2.14.1.
        if have.split("+", 1)[0] != version:
            wrong[name] = (version, have)
    assert not wrong, (
        f"installed versions differ from the pins (pinned, installed): {wrong}; "
        "run `make install` (or fix the pin in pyproject.toml / requirements-nodeps.txt)"
    )
    if missing:
        pytest.skip(f"not installed in this interpreter, versions not checked: {missing}; `make install` adds them")


def admitted_pythons(spec: str) -> list[str]:
    """The 3.x releases (x.0) a Requires-Python specifier admits, among 3.8 to 3.19."""
    from packaging.specifiers import SpecifierSet

    allowed = SpecifierSet(spec)
    return [f"3.{minor}" for minor in range(8, 20) if f"3.{minor}.0" in allowed]


def test_requires_python_is_admitted_by_every_pinned_package():
    """pyproject's requires-python promises only Pythons that every pinned package installs on."""
    ours = tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"]
    promised = admitted_pythons(ours)
    running = ".".join(map(str, sys.version_info[:2]))
    assert running in promised, f"pyproject.toml: requires-python {ours!r} excludes the running Python {running}"
    refused, unread = {}, []
    for name in sorted({**pyproject_pins(), **nodeps_pins()}):
        try:
            theirs = importlib.metadata.metadata(name).get("Requires-Python") or ""
        except importlib.metadata.PackageNotFoundError:
            unread.append(name)
            continue
        missing = sorted(set(promised) - set(admitted_pythons(theirs)), key=lambda v: int(v.split(".")[1]))
        if missing:
            refused[name] = (theirs, missing)
    assert not refused, (
        f"pyproject.toml: requires-python {ours!r} allows Pythons these pinned packages refuse "
        f"(their Requires-Python, refused): {refused}; narrow requires-python or change the pin"
    )
    if unread:
        pytest.skip(f"not installed in this interpreter, Requires-Python not read: {unread}; `make install` adds them")


TREE_LIMIT_MIB = 55  # a lent GPU receives at most 64 MiB: the tree plus what scripts/gpu_world.sh carries


def test_the_tracked_tree_fits_on_a_gpu_machine():
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = [root / n for n in names.decode().split("\0") if n and (root / n).is_file()]
    sizes = sorted(((f.stat().st_size, f.relative_to(root)) for f in files), reverse=True)
    total = sum(s for s, _ in sizes) / 2 ** 20
    biggest = ", ".join(f"{p} {s / 2 ** 20:.1f}" for s, p in sizes[:4])
    assert total < TREE_LIMIT_MIB, (f"tracked files total {total:.1f} MiB, over {TREE_LIMIT_MIB} MiB "
                                    f"(largest, MiB: {biggest}); shrink one before committing it")


def _guarded(tree) -> set[int]:
    """ids of the import nodes inside a ``try`` that catches ImportError: optional imports."""
    import ast

    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                h.type is None or any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
                                      for n in ast.walk(h.type)) for h in node.handlers):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return out


def test_every_package_the_library_needs_is_pinned():
    # A module facelab imports without an ImportError fallback must come from a pinned distribution:
    # one that arrives only as another package's dependency can change or vanish under it.
    import ast

    pinned = set(pyproject_pins()) | set(nodeps_pins())
    dists = importlib.metadata.packages_distributions()
    unpinned = {}
    for path in sorted((ROOT / "facelab").rglob("*.py")):
        tree = ast.parse(path.read_text())
        optional = _guarded(tree)
        for node in ast.walk(tree):
            if id(node) in optional or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for top in {n.split(".")[0] for n in names if not getattr(node, "level", 0)}:
                if top in sys.stdlib_module_names or top in ("facelab", "__future__"):
                    continue
                if not {normalize(d) for d in dists.get(top, [])} & pinned:
                    unpinned.setdefault(top, path.relative_to(ROOT).as_posix())
    assert not unpinned, (f"imported but not pinned (module: first file): {unpinned}; pin its distribution in "
                          "pyproject.toml (and the environment files), or import it inside try/except ImportError")
