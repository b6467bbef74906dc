"""Why a training run stopped early on purpose, and the exit status `postrl` returns for it.

Torch-free so the CLI can catch these without importing the trainers. Exit statuses of a
training command (`postrl train | sft | rm | prm ...`):

    0    finished
    2    bad input (config, data, missing files): nothing was trained
    3    stopped by a fault after keeping what it could: `max_nonfinite_steps` non-finite steps in a
         row (a checkpoint of the last good weights was written), or the disk filled up while
         saving (the previous checkpoint is intact)
    130  SIGINT, 143 SIGTERM (128 + the signal number, the shell's convention): a checkpoint was
         written at the step boundary after the signal; `--resume` continues exactly

A non-zero status after a signal lets a scheduler or a retry loop tell "stopped" from "finished".
"""

from __future__ import annotations

import signal


class RunStopped(RuntimeError):
    """The run stopped before its last step; the message says why, what was saved and what to do."""

    exit_code = 3


class Interrupted(RunStopped):
    """SIGINT or SIGTERM: the run saved a checkpoint at a step boundary and stopped."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class NonFiniteStop(RunStopped):
    """Too many steps in a row had a non-finite loss or gradient (each was skipped)."""


class DiskFull(RunStopped):
    """Saving a checkpoint ran out of space; the partial copy was removed, older ones are intact."""


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
