"""Conventions of docs/architecture.md that a reader of one module cannot check: one device rule,
frozen configs that refuse unknown keys, functions short enough to read (or saying why not), and
no measured timings in docstrings."""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from facelab.mapper import LatentMapper, MapperConfig
from facelab.projector import ProjectConfig
from facelab.pti import PTIConfig
from facelab.train.gan import TrainConfig
from facelab.worlds import Budget

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "facelab").rglob("*.py"))
MAX_LINES = 80


def functions():
    for path in LIBRARY:
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield rel, node


def test_device_none_means_get_device_everywhere():
    bad = []
    for rel, fn in functions():
        args = fn.args
        positional = list(zip(args.args[len(args.args) - len(args.defaults):], args.defaults))
        for arg, default in positional + list(zip(args.kwonlyargs, args.kw_defaults)):
            required = default is None  # a keyword-only argument without default: the caller always names it
            none = isinstance(default, ast.Constant) and default.value is None
            if arg.arg == "device" and not required and not none:
                bad.append(f"{rel}:{fn.lineno} {fn.name}(device={ast.unparse(default)})")
    assert not bad, "device must default to None (= facelab.get_device()):\n" + "\n".join(bad)


def test_long_functions_say_why():
    bad = []
    for rel, fn in functions():
        n = fn.end_lineno - fn.lineno + 1
        if n > MAX_LINES and "Long because" not in (ast.get_docstring(fn) or ""):
            bad.append(f"{rel}:{fn.lineno} {fn.name}: {n} lines")
    assert not bad, (f"functions over {MAX_LINES} lines: split them into readable steps, or say why not in the "
                     "docstring ('Long because ...'):\n" + "\n".join(bad))


@pytest.mark.parametrize("cls", [ProjectConfig, PTIConfig, MapperConfig, TrainConfig, Budget])
def test_configs_are_frozen_and_refuse_unknown_keys(cls):
    config = cls()
    assert dataclasses.is_dataclass(config) and type(config).__dataclass_params__.frozen
    field = dataclasses.fields(config)[-1].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, field, getattr(config, field))
    assert cls.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="has no stepz") as e:
        cls.from_dict({**config.to_dict(), "stepz": 3})
    assert "\n" not in str(e.value) and "known:" in str(e.value)
    with pytest.raises(ValueError, match="has no stepz"):
        config.replace(stepz=3)


def test_mapper_configs_are_not_shared():
    # The old default argument MapperConfig() was one object for every mapper: changing it changed
    # every later default mapper. Now each mapper gets its own default, and none can be changed.
    a, b = LatentMapper(2, 4), LatentMapper(2, 4)
    assert a.config == b.config == MapperConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.config.depth = 3
    assert a.config.replace(depth=3).depth == 3 and b.config.depth == MapperConfig().depth


def test_pti_config_embeds_the_projectors():
    c = PTIConfig()
    assert isinstance(c.pivot, ProjectConfig)
    assert (c.pivot.steps, c.pivot.lr) == (c.pivot_steps, c.pivot_lr) == (450, 0.1)
    assert c.pivot.replace(steps=1000, lr=0.1) == ProjectConfig()  # otherwise the StyleGAN2 projector's values
    short = PTIConfig(pivot_steps=80, pivot_lr=0.01)  # the shorthands set the embedded config
    assert (short.pivot.steps, short.pivot.lr) == (80, 0.01)
    full = PTIConfig(pivot=ProjectConfig(steps=30, whiten=False))
    assert (full.pivot_steps, full.pivot.whiten) == (30, False)
    # a config written before ProjectConfig existed (flat pivot_steps / pivot_lr) still loads
    old = {k: v for k, v in c.to_dict().items() if k != "pivot"} | {"pivot_steps": 7, "pivot_lr": 0.05}
    assert PTIConfig.from_dict(old).pivot == PTIConfig().pivot.replace(steps=7, lr=0.05)
    # what notebook 03 does: change one field of a config's dict
    assert PTIConfig(**{**short.to_dict(), "locality": False}).pivot == short.pivot
    assert PTIConfig(**{**short.to_dict(), "pivot_steps": 9}).pivot.steps == 9
    assert PTIConfig(pivot={"whiten": False}).pivot == PTIConfig().pivot.replace(whiten=False)


# A number followed by a unit of time or of a rate ("20 ms", "< 1 s", "7 minutes", "43.7 CPU minutes",
# "5.1 GFLOP/s", "120 img/s", "3 it/s"): a measurement on some machine, which belongs in a model card
# (facelab/weights/*.md, docs/world64/*.md) or a bench script's output. Counts are not timings:
# "450 steps", "[N, 3, 64, 64]", "64 px", "2H", "/ 2h" and a network's work ("9 MFLOP per face") pass.
TIMING = re.compile(
    r"(?<![\w.])\d+(?:[.,]\d+)?\s*(?:(?:CPU|GPU|wall|processor)[- ])?"
    r"(?:ms|s|secs?|seconds?|minutes?|mins?|hours?|hrs?|[GTM]FLOP/s|[GTM]FLOPS|img/s|images?/s|it/s|steps?/s|fps)"
    r"(?![\w(])", re.I)


def docstrings(source: str):
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield getattr(node, "name", "<module>"), ast.get_docstring(node, clean=False) or ""


def timings_quoted(source: str) -> list[str]:
    return [f"{name}: {m.group(0)!r}" for name, doc in docstrings(source) for m in TIMING.finditer(doc)]


def test_the_timing_pattern_catches_timings_and_spares_counts():
    for quote in ("about 20 ms per face", "loads in < 1 s", "about 7 minutes on 2 cores", "43.7 CPU minutes",
                  "5.1 GFLOP/s", "2 TFLOPS", "120 img/s", "3.4 it/s", "1.5 seconds", "took 12s"):
        assert timings_quoted(f'"""{quote}."""'), quote
    for count in ("450 steps", "[N, 3, 64, 64]", "[2H, 2W]", "64 px", "/ 2h", "s(x) at 1 s(y)", "--minutes 120",
                  "0.5 % quantiles", "about 9 MFLOP per face", "every 16 steps"):
        assert not timings_quoted(f'"""{count}."""'), count


def test_docstrings_quote_no_timings():
    bad = [f"{path.relative_to(ROOT)} {hit}" for path in LIBRARY for hit in timings_quoted(path.read_text())]
    assert not bad, ("measured timings or rates in docstrings; move them (with the command that produced them) into "
                     "a model card (facelab/weights/*.md or docs/world64/*.md) and point there:\n" + "\n".join(bad))
