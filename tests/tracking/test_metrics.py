"""MetricsLogger: jsonl round trip, non-finite values, crash tolerance, resume, console, sinks."""

import importlib.util
import io
import json

import numpy as np
import pytest
import torch
from rich.console import Console

from postrl.tracking import MetricsLogger, read_metrics


def test_log_then_read_round_trip_with_step_first(tmp_path):
    with MetricsLogger(tmp_path) as log:
        log.log(1, {"reward/mean": 0.5, "kl": torch.tensor(0.25), "entropy": np.float32(1.5), "n": 3})
        log.log(2, {"reward/mean": 0.75})
    first = (tmp_path / "metrics.jsonl").read_text().splitlines()[0]
    assert first.startswith('{"step": 1,')
    assert read_metrics(tmp_path / "metrics.jsonl") == [
        {"step": 1, "reward/mean": 0.5, "kl": 0.25, "entropy": 1.5, "n": 3.0},
        {"step": 2, "reward/mean": 0.75},
    ]
    assert read_metrics(tmp_path) == read_metrics(tmp_path / "metrics.jsonl")  # a run dir works too


def test_each_line_is_flushed_before_close(tmp_path):
    log = MetricsLogger(tmp_path)
    log.log(1, {"loss": 1.0})
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 1.0}]
    log.close()


def test_non_finite_values_become_null(tmp_path):
    with MetricsLogger(tmp_path) as log:
        log.log(1, {"a": float("nan"), "b": float("inf"), "c": 1.0})
    line = (tmp_path / "metrics.jsonl").read_text()
    assert json.loads(line) == {"step": 1, "a": None, "b": None, "c": 1.0}
    assert "NaN" not in line and "Infinity" not in line  # strict JSON for other readers


def test_non_numbers_and_step_key_are_rejected(tmp_path):
    with MetricsLogger(tmp_path) as log:
        with pytest.raises(TypeError, match="'name'"):
            log.log(1, {"name": "x"})
        with pytest.raises(ValueError, match="step"):
            log.log(1, {"step": 3})


def test_truncated_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a": 2.0}\n{"step": 3, "a"')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_corrupt_middle_line_raises_with_its_number(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2\n{"step": 3}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        read_metrics(path)


def test_resume_drops_steps_after_the_checkpoint(tmp_path):
    # A run checkpointed at step 2, logged steps 3-4, crashed mid-line; it resumes from 2.
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "a": s}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5')
    with MetricsLogger(tmp_path, resume_step=2) as log:
        log.log(3, {"a": 30.0})
    assert [(r["step"], r["a"]) for r in read_metrics(path)] == [(1, 1), (2, 2), (3, 30.0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # no temp file left


def test_fresh_run_starts_a_new_file(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 7}\n')
    with MetricsLogger(tmp_path) as log:
        log.log(1, {"a": 1.0})
    assert read_metrics(tmp_path) == [{"step": 1, "a": 1.0}]


def test_console_line_every_n_steps(tmp_path):
    buf = io.StringIO()
    console = Console(file=buf, width=200, color_system=None)
    with MetricsLogger(tmp_path, console=console, console_every=2) as log:
        for step in (1, 2, 3, 4):
            log.log(step, {"reward/mean": 0.5, "kl": float("nan"), "step_time": 0.123456, "other": 1.0})
    lines = buf.getvalue().splitlines()
    assert lines == ["step 2 | reward 0.5 | kl nan | s/step 0.1235",
                     "step 4 | reward 0.5 | kl nan | s/step 0.1235"]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_missing_gives_install_hint(tmp_path):
    with pytest.raises(ImportError, match=r"pip install tensorboard.*logging.tensorboard: false"):
        MetricsLogger(tmp_path, tensorboard=True)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_missing_gives_install_hint(tmp_path):
    with pytest.raises(ImportError, match=r"pip install wandb.*logging.wandb_project"):
        MetricsLogger(tmp_path, wandb_project="p")
