"""Loading weights without running code: ``torch.load(weights_only=True)`` and state-dict checks.

The lowest layer of facelab's weight handling, shared by :mod:`facelab.hub` (named weights, the
cache) and :mod:`facelab.nvidia` (NVIDIA pickles read as data). Every failure is one line: a file
that holds code names the refused global (``refused global posix.system``), never torch's advice to
turn the protection off; a state dict with missing or unexpected keys, other shapes or NaN is
refused before anything is copied into a module (never a partial load).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch


def weights_only_refusal(e: BaseException) -> str:
    """The useful line of a ``torch.load(weights_only=True)`` failure: what it refused (e.g. ``refused
    global posix.system``), without torch's advice to turn the protection off."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # torch colours parts of its message
    if m := re.search(r"GLOBAL ([\w.]+)", text):
        return f"refused global {m.group(1)}"
    advice = ("Weights only load failed", "Re-running", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(advice)]
    return f"{type(e).__name__}: {lines[0][:160]}" if lines else type(e).__name__


def load_file(path: str | Path) -> dict:
    """``torch.load`` restricted to tensors and plain containers (never unpickles code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such weights file: {path}") from None
    except Exception as e:  # the unpickler refused something, or the file is not a torch file
        raise ValueError(f"{path} is not a plain-tensor torch file ({weights_only_refusal(e)}); facelab only "
                         "loads weights_only files and never unpickles code (a damaged file: download or build it "
                         "again)") from None


def _few(items: list[str], k: int = 3) -> str:
    return ", ".join(items[:k]) + (f" and {len(items) - k} more" if len(items) > k else "")


def check_state(expected: Mapping[str, torch.Tensor], state, path, *, fix: str) -> None:
    """One-line ``ValueError`` unless ``state`` has exactly ``expected``'s keys and shapes, no NaN, and no
    Inf where ``expected`` (the freshly built module's own state) has none: an infinity may be meant, e.g.
    an unset clipping bound the module starts with, but a weight that overflowed is refused."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: its weights are a {type(state).__name__}, not a state dict; {fix}")
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [f"{k} {list(getattr(v, 'shape', [type(v).__name__]))} vs {list(expected[k].shape)}"
              for k, v in state.items() if k in expected and getattr(v, "shape", None) != expected[k].shape]
    floats = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    bad = [k for k, v in floats.items() if bool(v.isnan().any())]
    inf = [k for k, v in floats.items() if k in expected and bool(v.isinf().any())
           and not (expected[k].is_floating_point() and bool(expected[k].isinf().any()))]
    problems = [f"{what} {_few(items)}" for what, items in (("missing", missing), ("unexpected", extra),
                                                            ("other shapes:", shapes), ("NaN in", bad),
                                                            ("Inf in", inf)) if items]
    if problems:
        raise ValueError(f"{path}: its weights do not fit ({'; '.join(problems)}); {fix}")


def load_state(module: torch.nn.Module, state, path, *, fix: str) -> None:
    """``module.load_state_dict(state)`` after :func:`check_state` (one-line errors, never a partial load)."""
    check_state(module.state_dict(), state, path, fix=fix)
    module.load_state_dict(state)
