"""A rich progress bar for the loops (a no-op without a console)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def progress_bar(console, enabled: bool, label: str, total: int, start: int = 0):
    """Yields `advance(**fields)`; fields (e.g. reward=0.5) are shown beside the bar."""
    if console is None or not enabled:
        yield lambda **_: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, transient=False) as bar:
        task = bar.add_task(label, total=total, completed=start, info="")

        def advance(**fields):
            info = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            bar.update(task, advance=1, info=info)

        yield advance
