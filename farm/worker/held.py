"""Ctrl-C and SIGTERM held over the steps of a job that must not be cut in half.

A KeyboardInterrupt between claiming a job and the runner's guard, or between the end of its
stages and the transaction that records how it ended, would leave the job running under a
process about to exit (`farm status` says lost, and nothing ends it until it is submitted again).
While held, a signal is only noted; `release()` puts the handlers back and delivers it, where
the runner can act on it. The same signal twice is delivered at once: a held step may be
waiting on a database lock, and the user must still be able to stop it.
"""

from __future__ import annotations

import signal
import threading

HELD = (signal.SIGINT, signal.SIGTERM)


class HeldSignals:
    """Holds HELD from construction to release() (or the end of a `with`); hold() holds them
    again. Only the main thread can set handlers, and only handlers set from Python can be put
    back: elsewhere it holds nothing."""

    def __init__(self):
        self.caught: list[int] = []
        self.previous: dict[int, object] = {}
        self.hold()

    def hold(self) -> None:
        if self.previous or threading.current_thread() is not threading.main_thread():
            return
        for sig in HELD:
            handler = signal.getsignal(sig)
            if handler is not None and handler != signal.SIG_IGN:
                self.previous[sig] = signal.signal(sig, self._note)

    def _note(self, signum, frame) -> None:
        insisted = signum in self.caught
        self.caught.append(signum)
        if insisted:
            self.release()

    def release(self, deliver: bool = True) -> None:
        """Put the handlers back and deliver what came meanwhile (unless told not to), once
        each, in arrival order."""
        previous, self.previous = self.previous, {}
        caught, self.caught = self.caught, []  # taken first: delivering one may raise
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught) if deliver else ():
            signal.raise_signal(sig)

    def __enter__(self) -> "HeldSignals":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
