"""Faults a training loop survives or stops on cleanly: the run's fault log, choosing the
checkpoint to resume from, SIGINT/SIGTERM, and runs of non-finite steps.

- `RUN_DIR/faults.jsonl`: one JSON line per event (checkpoint fallback, non-finite step,
  interruption), appended across resumes; `fault_counts` turns it into `faults/<kind>` numbers
  for the run's summary.
- `resume_checkpoint`: the newest checkpoint that matches its manifest; a damaged newer one is
  reported (which file, expected vs found), renamed to `corrupt_step_N` (kept for inspection,
  no longer a checkpoint) and the one before it is used.
- `RunGuard`, around a training loop: the first SIGINT/SIGTERM only sets a flag, so the loop
  finishes its step, saves a checkpoint and stops with `Interrupted` (exit status 128 + signal;
  a second signal interrupts at once). A step whose loss or gradient norm is non-finite (the
  learner skipped its update) is reported; `max_nonfinite_steps` of them in a row save a
  checkpoint and stop with `NonFiniteStop`.

In a loop:

    with RunGuard(run_dir, max_nonfinite_steps=..., console=console, dp=dp) as guard:
        for step in ...:
            metrics = ...; metrics.update(guard.after_step(done, metrics))
            stopping = guard.stopping()        # collective under data parallelism
            if stopping or <checkpoint due>: save(state | guard.state_dict())
            if stopping: guard.stop(done)      # raises
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from postrl.learner.checkpoint import pick_checkpoint
from postrl.run_stop import Interrupted, NonFiniteStop, signal_name

FAULTS_FILE = "faults.jsonl"
NONFINITE_KEYS = ("loss", "grad_norm")  # the learner skips an update whose gradient norm is not finite


# ------------------------------------------------------------------------------------ fault log
def record_fault(run_dir: str | Path, kind: str, **info: Any) -> None:
    """Append one event to the run's fault log (flushed at once: it must outlive a crash)."""
    with open(Path(run_dir) / FAULTS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": kind, "time": round(time.time(), 3), **info}) + "\n")


def fault_counts(run_dir: str | Path) -> dict[str, int]:
    """{"faults/<kind>": events} over every attempt of the run (empty without faults)."""
    path = Path(run_dir) / FAULTS_FILE
    counts: dict[str, int] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                kind = json.loads(line)["kind"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a kill
            counts[f"faults/{kind}"] = counts.get(f"faults/{kind}", 0) + 1
    return counts


def clear_faults(run_dir: str | Path) -> None:
    """A fresh run starts a new fault log."""
    (Path(run_dir) / FAULTS_FILE).unlink(missing_ok=True)


def resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: the newest that verifies. Each damaged newer one is warned
    about, logged as a `checkpoint_fallback` fault and renamed to `corrupt_step_N`."""
    path, rejected = pick_checkpoint(run_dir)
    if path is None and rejected:  # left in place: a later --resume must not quietly start from scratch
        raise ValueError(f"{run_dir}: every checkpoint is damaged ({'; '.join(str(e) for e in rejected)}); "
                         "nothing to resume from: start a new run (another output_dir) or repair the files")
    for bad in rejected:
        target = bad.path.with_name(f"corrupt_{bad.path.name}")
        if target.exists():  # from an earlier fallback at the same step
            shutil.rmtree(target)
        os.replace(bad.path, target)
        record_fault(run_dir, "checkpoint_fallback", checkpoint=bad.path.name, moved_to=target.name,
                     problems=bad.problems, using=path.name)
        warnings.warn(f"{bad}; moved it to {target.name} and resuming from {path.name} instead", stacklevel=2)
    return path


# ----------------------------------------------------------------------------------- the guard
class RunGuard:
    """Stop signals and the non-finite streak of one training loop (see the module docstring)."""

    def __init__(self, run_dir: str | Path, *, max_nonfinite_steps: int | None, console=None, dp=None):
        self.run_dir, self.max_nonfinite = Path(run_dir), max_nonfinite_steps
        self.console, self.dp = console, dp
        self.streak = 0  # non-finite steps in a row; checkpointed, so a resume continues the count
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def is_main(self) -> bool:
        return self.dp is None or self.dp.is_main

    # -- signals
    def __enter__(self) -> "RunGuard":
        if threading.current_thread() is threading.main_thread():  # handlers can only live there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        if self.signum is not None:  # the second signal: stop now (checkpoints are atomic)
            self.__exit__()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        if self.is_main:  # os.write: a handler may interrupt a print in progress
            os.write(sys.stderr.fileno(), f"\n{signal_name(signum)} received: saving a checkpoint after this "
                     "step, then stopping (send it again to stop at once)\n".encode())

    # -- per step
    def after_step(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """Count a non-finite step (its update was skipped); returns {"nonfinite/streak": n}, n > 0 exactly
        when this step was non-finite."""
        bad = {k: metrics[k] for k in NONFINITE_KEYS if k in metrics and not math.isfinite(float(metrics[k]))}
        self.streak = self.streak + 1 if bad else 0
        if bad and self.is_main:
            record_fault(self.run_dir, "nonfinite_step", step=step, streak=self.streak,
                         values={k: str(v) for k, v in bad.items()})
            limit = f"; the run stops after {self.max_nonfinite}" if self.max_nonfinite else ""
            self._say(f"step {step}: non-finite {', '.join(f'{k} {v}' for k, v in bad.items())}; the update "
                      f"was skipped ({self.streak} in a row{limit})")
        return {"nonfinite/streak": float(self.streak)}

    def stopping(self) -> bool:
        """Whether to save and stop after this step; rank 0 decides for every rank (call on all)."""
        reason = self._reason()
        if self.dp is not None:
            reason = self.dp.broadcast_object(reason if self.dp.is_main else None)
            if reason and reason[0] == "signal":
                self.signum = reason[1]
        return reason is not None

    def _reason(self):
        if self.signum is not None:
            return ("signal", self.signum)
        if self.max_nonfinite and self.streak >= self.max_nonfinite:
            return ("nonfinite", self.streak)
        return None

    def stop(self, step: int, checkpoint: Path | None) -> None:
        """Raise the reason to stop, after the loop saved `checkpoint` at `step`."""
        saved = f"checkpoint {checkpoint.name} saved" if checkpoint is not None else "checkpoint saved"
        if self.signum is not None:
            name = signal_name(self.signum)
            if self.is_main:
                record_fault(self.run_dir, "interrupted", step=step, signal=name)
            raise Interrupted(f"{name} after step {step}: {saved} in {self.run_dir}; rerun the same "
                              "command with --resume to continue exactly", self.signum)
        if self.is_main:
            record_fault(self.run_dir, "nonfinite_stop", step=step, streak=self.streak)
        raise NonFiniteStop(f"{self.streak} steps in a row (to step {step}) had a non-finite loss or "
                            f"gradient (train.max_nonfinite_steps={self.max_nonfinite}); {saved} in {self.run_dir} "
                            "(the weights after the last applied update). Lower train.lr, set train.max_grad_norm, "
                            "or check the rewards and the loss for inf/NaN, then rerun with --resume")

    def state_dict(self) -> dict[str, int]:
        return {"nonfinite_streak": self.streak}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.streak = int(state.get("nonfinite_streak", 0))  # 0 for checkpoints from before the count

    def _say(self, message: str) -> None:
        if not self.is_main:
            return
        if self.console is not None:
            self.console.print(f"[yellow]warning: {message}[/]")
        else:
            warnings.warn(message, stacklevel=3)
