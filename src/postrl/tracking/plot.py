"""Training curves of a run directory as one PNG (`postrl plot RUN_DIR`).

Reads `metrics.jsonl` and, when present, `eval.jsonl` (lines `{"step", "accuracy", ...}`), and
draws one panel per metric. matplotlib is imported here only, with its object-oriented Agg
canvas: no display is needed and the caller's pyplot backend is left alone.
"""

from __future__ import annotations

import math
from pathlib import Path

from postrl.tracking.metrics import read_metrics

EVAL_PREFIX = "eval:"
"""A key `eval:NAME` is read from eval.jsonl and drawn as markers (evaluations are sparse)."""

DEFAULT_KEYS = ["reward/mean", "accuracy", "eval:accuracy", "kl", "entropy", "completion_len/mean"]


def plot_run(run_dir: str | Path, out: str | Path | None = None, keys: list[str] | None = None) -> Path:
    """Write the curves of `run_dir` to `out` (default `run_dir/curves.png`) and return its path.

    `keys`: metric names of metrics.jsonl, or `eval:NAME` for eval.jsonl; default the
    `DEFAULT_KEYS` present in the run (or every metric when none of them is).
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    train = read_metrics(metrics_path) if metrics_path.is_file() else []
    if not train:
        raise FileNotFoundError(f"no metrics in {metrics_path}; is this a postrl run directory?")
    eval_path = run_dir / "eval.jsonl"
    evals = read_metrics(eval_path) if eval_path.is_file() else []

    def series(key: str) -> tuple[list[int], list[float]]:
        records, name = (evals, key[len(EVAL_PREFIX):]) if key.startswith(EVAL_PREFIX) else (train, key)
        points = [(r["step"], float(r[name])) for r in records
                  if isinstance(r.get(name), (int, float)) and "step" in r]
        return [s for s, _ in points], [v for _, v in points]

    if keys is None:
        keys = [k for k in DEFAULT_KEYS if series(k)[0]]
        if not keys:  # a run logging other names (e.g. SFT's loss): show everything it has
            keys = sorted({k for r in train for k, v in r.items()
                           if k != "step" and isinstance(v, (int, float))})
    missing = [k for k in keys if not series(k)[0]]
    if missing or not keys:
        available = sorted({k for r in train for k in r if k != "step"}
                           | {EVAL_PREFIX + k for r in evals for k in r if k != "step"})
        raise ValueError(f"{run_dir}: no values for {', '.join(missing) or 'any key'}; "
                         f"available: {', '.join(available)}")

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        steps, values = series(key)
        if key.startswith(EVAL_PREFIX):
            ax.plot(steps, values, "o-", color="tab:orange", markersize=4)
            ax.set_title(f"eval {key[len(EVAL_PREFIX):]}")
        else:
            ax.plot(steps, values, "-", color="tab:blue", linewidth=1.2)
            ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(run_dir.resolve().name)

    out = Path(out) if out is not None else run_dir / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
