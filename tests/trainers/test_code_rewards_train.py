"""postrl train on task:python_functions with the code_tests reward and the drm process reward."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import TINY_MODEL


@pytest.mark.slow
def test_two_rl_steps_score_code_in_the_sandbox_and_add_drm(tmp_path):
    from postrl.config import RLConfig, resolve
    from postrl.trainers.rl import train

    raw = {"name": "code", "output_dir": str(tmp_path / "run"), "model": TINY_MODEL,
           "data": {"source": "task:python_functions"},
           "rewards": [{"name": "code_tests", "kwargs": {"timeout_s": 2.0}}],
           "process_rewards": [{"name": "drm", "weight": 0.5}],
           "rollout": {"n": 4, "max_new_tokens": 24},
           "train": {"steps": 2, "prompts_per_step": 2, "lr": 1e-3, "micro_batch_size": 8},
           "eval": {"limit": 4, "before": False}, "checkpoint": {"every": 1, "keep_last": 1},
           "logging": {"progress": False}}
    summary = train(resolve(RLConfig, raw, [], source="test config"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "process/drm/mean" in r]
    assert len(steps) == 2 and summary["rl_steps"] == 2
    for r in steps:
        # a random policy writes no passing program; drm is z-scored per prompt, so it sums to 0
        assert r["reward/code_tests/mean"] == 0.0
        assert abs(r["process/drm/mean"]) < 1e-5
        assert math.isfinite(r["loss"])
