"""Run tracking: metric sinks (jsonl, console, tensorboard, wandb) and training-curve plots.

`metrics.jsonl` in the run directory is the record every other view is built from.
"""

from postrl.tracking.metrics import MetricsLogger, read_metrics, summary_line, truncate_jsonl  # noqa: F401
from postrl.tracking.plot import plot_run  # noqa: F401
