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
