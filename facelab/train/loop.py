"""What the resumable trainers share: a loop that always leaves a checkpoint behind."""
from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def saving_on_exit(save: Callable[[], None]) -> Iterator[dict]:
    """Run a training loop that checkpoints however it ends.

    Yields ``stop``, a dict whose ``stop["now"]`` turns True on SIGTERM (the loop should then end
    after its current step); Ctrl-C ends the loop at once. Either way, and on normal exit, ``save()``
    runs last, so rerunning the trainer resumes where it stopped.
    """
    stop = {"now": False}
    old = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        yield stop
    except KeyboardInterrupt:
        print("interrupted: saving a checkpoint")
    finally:
        signal.signal(signal.SIGTERM, old)
        save()


def check_schedule(path, taken: int, old: Callable[[int], float], new: Callable[[int], float], flags: str) -> None:
    """Refuse to resume a run (``path``, ``taken`` steps done at the rates ``old``) on a learning-rate
    schedule ``new`` that would have taken any of those steps at another rate: only steps not yet taken
    may change, so a resumed run stays the run a fresh one with the new flags would be."""
    moved = next((t for t in range(taken) if old(t) != new(t)), None)
    if moved is not None:
        raise ValueError(f"{path} took step {moved} at lr {old(moved):.3g}, which {flags} would take at "
                         f"{new(moved):.3g}; anneal only steps not yet taken (or use a new --out)")
