"""The issue's claim on the embedded default: after a short SFT warm start, DPO on the built-in
pairs raises the held-out chosen-over-rejected margin and the policy's greedy accuracy."""

import pytest

from postrl.config import PrefConfig, resolve
from postrl.trainers import pref

@pytest.mark.slow
def test_dpo_raises_the_margin_and_greedy_accuracy_after_an_sft_warm_start(tmp_path, sft_warm_start):
    # the shared warm start (conftest.py: 400 SFT steps, greedy accuracy ~0.25) leaves accuracy room to move
    out = pref.train(resolve(PrefConfig, {
        "output_dir": str(tmp_path / "dpo"), "model": {"name_or_path": sft_warm_start},
        "data": {"source": "task:arithmetic_pairs", "task_kwargs": {"level": 2}, "limit": 2000},
        "loss": {"name": "dpo", "kwargs": {"beta": 0.1}},
        "train": {"steps": 60, "batch_size": 32, "micro_batch_size": 32, "lr": 1e-4},
        "eval": {"limit": 200, "max_new_tokens": 4}, "logging": {"progress": False}}))
    print({k: v for k, v in out.items() if k.endswith(("_before", "_after"))})
    # at the start policy == reference: every implicit-reward margin is 0
    assert out["pref_margin_before"] == 0.0 and out["pref_accuracy_before"] == 0.0
    # measured: margin 0 -> 0.69, pair accuracy 0 -> 0.64, greedy accuracy 0.24 -> 0.40 (200 held-out problems)
    assert out["pref_margin_after"] > 0.3 and out["pref_accuracy_after"] > 0.55
    assert out["accuracy_before"] > 0.1
    assert out["accuracy_after"] >= out["accuracy_before"] + 0.08
