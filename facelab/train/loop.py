"""What the resumable trainers share: a loop that always leaves a checkpoint behind."""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..utils import DeviceUnavailable


@contextmanager
def stop_requests() -> Iterator[dict]:
    """Turn SIGTERM and a first Ctrl-C into a request to stop between steps.

    Yields ``stop``: ``stop["now"]`` turns True on either, and a training loop checks it before each
    step, so it ends on a whole step (a checkpoint written in the middle of one, with the weights
    updated and the counters not, would not resume exactly). A second Ctrl-C raises
    ``KeyboardInterrupt`` at once. Outside the main thread, where Python takes no signal handlers,
    nothing is installed and Ctrl-C interrupts as usual; an ignored SIGINT (a background job's) stays
    ignored.
    """
    stop = {"now": False}

    def on_int(*_):
        if stop["now"]:
            raise KeyboardInterrupt
        stop["now"] = True
        print("\ninterrupt: stopping after this step (Ctrl-C again: stop at once, without a checkpoint)", flush=True)

    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    handlers = {signal.SIGTERM: lambda *_: stop.update(now=True), signal.SIGINT: on_int}
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # a background job's: Ctrl-C is not meant for it
        del handlers[signal.SIGINT]
    old = {s: signal.signal(s, h) for s, h in handlers.items()}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def errors_in_one_line(main: Callable[[], None]) -> None:
    """A ``python -m facelab.train...`` entry: bad input ends in one line and status 1, as the ``facelab``
    command's errors do: a download that cannot be made (``ConnectionError``: :mod:`facelab.hub`'s says
    how to fix it: connect, set a mirror, or place the file), a bad value or flag (``ValueError``), a file
    missing or in the way (``OSError``), a device the machine lacks. ``FACELAB_DEBUG=1`` shows the
    traceback."""
    try:
        main()
    except (ConnectionError, ValueError, OSError, DeviceUnavailable) as e:
        if os.environ.get("FACELAB_DEBUG"):
            raise
        text = str(e).strip()
        raise SystemExit(f"error: {text.splitlines()[0] if text else type(e).__name__}") from None


def run_main(main: Callable[[], None]) -> None:
    """A trainer's ``python -m`` entry: a run stopped by a signal (it has said so and saved) exits with
    status 130, as a shell's interrupted command does, without a traceback; and
    :func:`errors_in_one_line`."""
    try:
        errors_in_one_line(main)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


@contextmanager
def saving_on_exit(save: Callable[[], None]) -> Iterator[dict]:
    """Run a training loop that checkpoints however it ends, on a whole step.

    Yields ``stop`` (:func:`stop_requests`): the loop ends after its current step once
    ``stop["now"]``. ``save()`` runs when the loop ends, finished or stopped, so rerunning the trainer
    resumes exactly where it stopped; then a stopped loop raises ``KeyboardInterrupt``, so that no
    caller mistakes a partly trained model for a finished one (nor ships it, nor stamps its stage).
    A loop broken off inside a step (a second Ctrl-C, an error) keeps its last checkpoint.
    """
    with stop_requests() as stop:
        yield stop
        save()
    if stop["now"]:
        print("stopped: checkpoint saved; rerun the same command to continue", flush=True)
        raise KeyboardInterrupt


def check_schedule(path, taken: int, old: Callable[[int], float], new: Callable[[int], float], flags: str) -> None:
    """Refuse to resume a run (``path``, ``taken`` steps done at the rates ``old``) on a learning-rate
    schedule ``new`` that would have taken any of those steps at another rate: only steps not yet taken
    may change, so a resumed run stays the run a fresh one with the new flags would be."""
    moved = next((t for t in range(taken) if old(t) != new(t)), None)
    if moved is not None:
        raise ValueError(f"{path} took step {moved} at lr {old(moved):.3g}, which {flags} would take at "
                         f"{new(moved):.3g}; anneal only steps not yet taken (or use a new --out)")
