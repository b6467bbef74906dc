"""`postrl train` with ROVER and SPO-chain on the tiny model: two steps move every weight, the
methods' diagnostics are logged, and SPO's Monte-Carlo values are filled before the estimator."""

import json
import math

import pytest
import torch
from helpers import tiny_rl_config

from postrl.learner.checkpoint import list_checkpoints
from postrl.learner.models import load_model, load_tokenizer
from postrl.trainers import rl

TOKEN_REWARD = [{"name": "tiny_rewards:token_id_mean"}]  # differs between samples: non-zero advantages


def _train(cfg):
    initial = load_model(cfg.model, load_tokenizer(cfg.model), torch.device("cpu")).state_dict()
    summary = rl.train(cfg)
    from safetensors.torch import load_file

    final = load_file(str(list_checkpoints(cfg.run_dir)[-1] / "model.safetensors"))
    unchanged = [k for k, v in final.items() if torch.equal(v, initial[k])]
    lines = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    return summary, unchanged, lines


def test_rover_preset_trains_two_steps(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": TOKEN_REWARD, "algorithm.preset": "rover"})
    assert not cfg.needs_reference and not cfg.needs_critic
    summary, unchanged, lines = _train(cfg)
    assert not unchanged, unchanged
    assert [m["step"] for m in lines] == [1, 2]
    for key in ("q_mean", "next_q_mean", "target_mean", "loss"):
        assert math.isfinite(lines[-1][key]), key
    assert lines[0]["q_mean"] == 0.0  # one on-policy update per batch: Q = rho log(pi / pi_old) = 0


def test_rover_reusing_batches_with_packing_bootstraps_from_the_next_state(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": TOKEN_REWARD, "algorithm.preset": "rover", "train.epochs": 2,
                                      "train.packing": True})
    summary, unchanged, lines = _train(cfg)
    assert not unchanged and math.isfinite(summary["last/loss"])
    assert lines[-1]["next_q_mean"] != 0.0  # the second epoch sees a moved policy


def test_segment_spo_preset_fills_monte_carlo_values_and_trains_two_steps(tmp_path, monkeypatch):
    seen = []
    real = rl.estimate_segment_values

    def spy(batch, **kwargs):
        real(batch, **kwargs)
        seen.append((kwargs["hparams"], batch.metadata["segment_cuts"], batch.metadata["segment_values"]))

    monkeypatch.setattr(rl, "estimate_segment_values", spy)
    cfg = tiny_rl_config(tmp_path, **{"rewards": TOKEN_REWARD, "algorithm.preset": "segment_spo",
                                      "algorithm.advantage_kwargs": {"mc_samples": 2, "cutpoint_interval": 2}})
    summary, unchanged, lines = _train(cfg)
    assert not unchanged and math.isfinite(summary["last/loss"])
    assert len(seen) == 2  # once per step
    hparams, cuts, values = seen[0]
    assert hparams == {"threshold": 0.9, "cutpoint_interval": 2, "max_segments": None, "mc_samples": 2,
                       "prob_mask": True}
    rows = cfg.train.prompts_per_step * cfg.rollout.n
    assert len(cuts) == len(values) == rows and any(cuts)  # a random tiny model has low-probability tokens
    assert all(len(c) == len(v) for c, v in zip(cuts, values))
    assert all(0.0 <= v <= 1.0 for row in values for v in row)  # token_id_mean lies in [0, 1]
    assert lines[0]["advantage/abs_mean"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("preset,extra", [("rover", {"train.epochs": 2}),
                                          ("segment_spo", {"algorithm.advantage_kwargs": {"mc_samples": 2}})])
def test_two_learner_processes_train_to_the_weights_of_one(tmp_path, preset, extra):
    from safetensors.torch import load_file

    base = {"rewards": TOKEN_REWARD, "algorithm.preset": preset, "train.mini_batches": 2,
            "train.micro_batch_size": 4, **extra}
    one = tiny_rl_config(tmp_path, **{**base, "output_dir": str(tmp_path / "one")})
    two = tiny_rl_config(tmp_path, **{**base, "output_dir": str(tmp_path / "two"), "distributed.learner_procs": 2})
    rl.train(one)
    rl.train(two)
    a, b = (load_file(str(list_checkpoints(c.run_dir)[-1] / "model.safetensors")) for c in (one, two))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4)
