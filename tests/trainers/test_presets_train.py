"""Every preset trains: two `postrl train` steps on the tiny model move the weights, with finite metrics.

The reward is binary (`tiny_rewards:token_parity`), as the verifier rewards these methods are
built for, and splits almost every group, so every estimator has a signal to pass on.
"""

import math

import pytest
import torch
from safetensors.torch import load_file

from postrl.algorithms import PRESETS
from postrl.learner.checkpoint import list_checkpoints
from postrl.learner.models import load_model, load_tokenizer
from postrl.trainers import rl

from helpers import tiny_rl_config

pytestmark = pytest.mark.slow

BINARY_REWARD = [{"name": "tiny_rewards:token_parity"}]
# A random-init model's token entropy (~ln V nats) is far above GTPO's filter threshold (0.7, set
# for trained LLMs), which would drop every completion: raise it so the update is exercised.
# ArCHer's preset trains only the critic for its first 20 steps (the paper's warm-up): let the policy move.
EXTRA = {"gtpo": {"algorithm.loss_kwargs": {"entropy_threshold": 10.0}},
         "archer": {"critic.policy_freeze_steps": 0}}


@pytest.mark.parametrize("name", PRESETS.names())
def test_two_steps_of_every_preset_train_the_policy(tmp_path, name):
    cfg = tiny_rl_config(tmp_path, **{"rewards": BINARY_REWARD, "algorithm.preset": name,
                                      "checkpoint.every": 2, "eval.limit": 4, **EXTRA.get(name, {})})
    initial = load_model(cfg.model, load_tokenizer(cfg.model), torch.device("cpu")).state_dict()
    summary = rl.train(cfg)
    assert summary["rl_steps"] == 2
    weights = load_file(str(list_checkpoints(cfg.run_dir)[-1] / "model.safetensors"))
    moved = [k for k, v in weights.items() if not torch.equal(v, initial[k])]
    assert moved, f"preset {name}: two steps left every weight unchanged"
    assert math.isfinite(summary["last/loss"]) and math.isfinite(summary["last/grad_norm"]), summary
