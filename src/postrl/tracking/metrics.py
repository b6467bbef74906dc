"""Metric sinks of a run: `run_dir/metrics.jsonl` always, a console line, tensorboard and wandb
when asked.

metrics.jsonl is the source of truth (plots and `postrl plot` read it): one JSON object per step,
`"step"` first, floats only, non-finite values as null, flushed line by line so a killed run
loses at most its last, partial line, which `read_metrics` skips.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

# Shown on the console line when present, in this order: (metric key, short label).
CONSOLE_KEYS = [("reward/mean", "reward"), ("accuracy", "acc"), ("kl", "kl"), ("entropy", "ent"),
                ("completion_len/mean", "len"), ("step_time", "s/step"),
                # preference training (trainers/pref.py)
                ("pref/margin", "margin"), ("pref/accuracy", "pair_acc"), ("eval/pref/accuracy", "eval_pair_acc"),
                ("eval/accuracy", "eval_acc")]


class MetricsLogger:
    """Writes each step's metrics to every sink; use as a context manager or call `close()`."""

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = False, wandb_project: str | None = None,
                 config: dict | None = None, resume_step: int | None = None, console: Any = None,
                 console_every: int = 1):
        """`resume_step`: continue a run from that checkpoint step; later lines (written after
        the checkpoint by a run that then crashed) are dropped so no step appears twice. Without
        it the run starts a new metrics.jsonl. `console`: a rich Console for the one-line summary."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        if resume_step is not None:
            truncate_jsonl(self.path, resume_step)
        self._file = open(self.path, "a" if resume_step is not None else "w", encoding="utf-8")
        self.console, self.console_every = console, max(1, int(console_every))
        self._tb = _tensorboard_writer(self.run_dir) if tensorboard else None
        self._wandb = _wandb_run(wandb_project, config, self.run_dir) if wandb_project else None

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Record `metrics` (floats, numpy or 0-d tensors) at `step`."""
        if "step" in metrics:
            raise ValueError("metrics must not contain the key 'step'; pass it as the step argument")
        values = {k: _to_float(k, v) for k, v in metrics.items()}
        record = {"step": int(step), **{k: (v if math.isfinite(v) else None) for k, v in values.items()}}
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()  # a crash loses at most this line
        finite = {k: v for k, v in values.items() if math.isfinite(v)}
        if self._tb is not None:
            for k, v in finite.items():
                self._tb.add_scalar(k, v, int(step))
        if self._wandb is not None:
            self._wandb.log(finite, step=int(step))
        if self.console is not None and int(step) % self.console_every == 0:
            self.console.print(summary_line(int(step), record), highlight=False)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def summary_line(step: int, record: dict[str, Any]) -> str:
    """`step 12 | reward 0.625 | acc 0.5 | kl 0.0012 | ...`: the keys of CONSOLE_KEYS present."""
    parts = [f"step {step}"]
    for key, label in CONSOLE_KEYS:
        if key in record:
            v = record[key]
            parts.append(f"{label} {'nan' if v is None else format(v, '.4g')}")
    return " | ".join(parts)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics file (or of `run_dir/metrics.jsonl` when given a directory).

    A partial last line (the process was killed mid-write) is skipped; a bad line elsewhere is
    corruption and raises. A missing file raises FileNotFoundError.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON object ({e})") from None
    return records


def truncate_jsonl(path: str | Path, max_step: int) -> None:
    """Keep only the records with step <= max_step (atomically: temp file, then os.replace)."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if isinstance(r.get("step"), int) and r["step"] <= max_step]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, allow_nan=False) + "\n" for r in kept)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _to_float(key: str, v: Any) -> float:
    try:
        return float(v)  # python numbers, numpy scalars, one-element tensors
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"metric {key!r} = {v!r} ({type(v).__name__}) is not a number") from None


def _tensorboard_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError("logging.tensorboard is true but tensorboard is not installed: "
                          "`pip install tensorboard` (or `pip install postrl[tracking]`), or set "
                          f"logging.tensorboard: false ({e})") from e
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _wandb_run(project: str, config: dict | None, run_dir: Path):
    try:
        import wandb
    except ImportError as e:
        raise ImportError("logging.wandb_project is set but wandb is not installed: `pip install wandb` "
                          "(or `pip install postrl[tracking]`), or unset logging.wandb_project") from e
    return wandb.init(project=project, config=config, dir=str(run_dir), name=run_dir.name)
