"""Stop a run cleanly on SIGINT (Ctrl-C) or SIGTERM (schedulers, `kill`).

The first signal sets a flag; the loop finishes the optimizer step it is in, saves a checkpoint and
returns, and `train.py` prints the command that resumes and exits with 128 + the signal number.
A second signal interrupts at once (the last complete checkpoint stays valid: saves are atomic).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class StopOnSignal:
    """Context manager: `stop.requested` becomes the received signal number (or None)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:  # second signal: give up waiting for the step to end
            raise KeyboardInterrupt
        self.requested = signum
        print(
            f"\nreceived {signal.Signals(signum).name}: finishing this step and saving a checkpoint "
            "(send it again to stop at once)",
            flush=True,
        )

    def __call__(self, step: int) -> bool:
        return self.requested is not None

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # handlers only work there
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
