"""Ctrl-C and SIGTERM during training: finish the step, write a checkpoint, say how to resume, exit 130/143."""

import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

from sidestep.errors import Interrupted

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """The first signal asks the loop to stop at the next step boundary; a second Ctrl-C stops at once
    (nothing is left half-written: every file is written under a temporary name first). Data-loader workers,
    forked while it is installed, inherit the handler and get Ctrl-C too (the whole process group does): there it
    does nothing, so the message is said once, by the training process, which then ends its workers."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}
        self._owner = os.getpid()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._owner:
            return
        if self.requested:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: stopping after this step and writing a checkpoint (Ctrl-C again to stop now)",
                    signal.Signals(signum).name)

    def interrupted(self, run_dir: Path, checkpoint: Path) -> Interrupted:
        self.signum = self.signum or signal.SIGTERM  # another process got the signal
        args = [a for a in sys.argv[1:] if not a.startswith(("hydra.run.dir=", "resume_from="))]
        command = shlex.join(["python", "-m", "sidestep.train", *args, f"hydra.run.dir={run_dir}", "resume_from=latest"])
        return Interrupted(f"stopped by {signal.Signals(self.signum).name}; checkpoint {checkpoint}\n"
                           f"resume with: {command}", 128 + self.signum)
