"""`postrl train` with the batch-level hooks: D3S / PC-GRPO (`select`), XRPO (uneven allocation,
in-context seeding, novelty sharpening) and the single-completion success replay; runs killed
and resumed end with the same weights and state as unbroken ones."""

import json

import pytest
import torch
from safetensors.torch import load_file
from helpers import kill_and_resume, tiny_rl_config

from postrl.learner.checkpoint import STATE_FILE, list_checkpoints
from postrl.trainers import rl

RARE = [{"name": "batch_rewards:sum_mod4"}]  # success ~1/4: all-failed groups are common


def _metrics(cfg):
    return [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("sampler, key", [("d3s", "d3s/kept_rows"), ("pc_grpo", "pc_grpo/weight_mean")])
def test_a_selecting_sampler_trains_on_what_select_returns(tmp_path, sampler, key):
    cfg = tiny_rl_config(tmp_path, **{"sampler.name": sampler, "rewards": [{"name": "tiny_rewards:token_parity"}]})
    rl.train(cfg)
    steps = _metrics(cfg)
    assert len(steps) == 2 and all(key in m for m in steps)
    if sampler == "d3s":  # the schedule: keep 1/2 of rows and tokens at step 0, 3/4 at step 1 (of 2)
        assert [m["d3s/sample_keep"] for m in steps] == [0.5, 0.75]
        assert steps[0]["d3s/kept_rows"] == 0.5 and steps[1]["d3s/kept_rows"] == 0.75
        assert steps[0]["d3s/kept_tokens"] <= 0.25 + 1e-9  # half the rows, then half their tokens
    assert all(m["loss"] == m["loss"] for m in steps)  # finite


def _resume_check(tmp_path, monkeypatch, steps=4, **overrides):
    def config(name):
        return tiny_rl_config(tmp_path / name, **{"train.steps": steps, "checkpoint.keep_last": 2, "data.limit": 4,
                                                 "train.prompts_per_step": 2, "rewards": RARE, **overrides})

    full, broken = config("full"), config("broken")
    rl.train(full)
    kill_and_resume(monkeypatch, rl, "rl_step", lambda resume: rl.train(broken, resume=resume), kill_at=3)
    last = [list_checkpoints(c.run_dir)[-1] for c in (full, broken)]
    assert last[0].name == last[1].name == f"step_{steps:06d}"
    x, y = (load_file(str(c / "model.safetensors")) for c in last)
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    states = [json.loads((c / STATE_FILE).read_text()) for c in last]
    assert states[0]["sampler"] == states[1]["sampler"]
    a, b = _metrics(full), _metrics(broken)
    drop = ("time/", "tokens_per_s", "memory/")
    assert [{k: v for k, v in m.items() if not k.startswith(drop)} for m in a] == \
        [{k: v for k, v in m.items() if not k.startswith(drop)} for m in b]
    return a, states[0]


@pytest.mark.slow
def test_xrpo_allocates_unevenly_seeds_failed_prompts_and_resumes_exactly(tmp_path, monkeypatch):
    # 6 steps over 4 prompts, 2 a step: prompt 1 fails all 4 rollouts at step 2 and is seeded at step 4
    steps, state = _resume_check(tmp_path, monkeypatch, 6, **{"sampler.name": "xrpo", "sampler.kwargs": {"n0": 2},
                                                           "algorithm.advantage": "xrpo_novelty"})
    assert all(m["allocation/extra_rollouts"] == 4.0 for m in steps)  # 2 prompts * (4 - 2)
    assert any(m["allocation/group_size_max"] > m["allocation/group_size_min"] for m in steps)  # uneven groups
    assert any(m["hints/fraction"] > 0 for m in steps)  # an all-failed prompt came back with examples
    assert state["sampler"]["pool"]


@pytest.mark.slow
def test_single_completion_replay_fills_all_failed_groups_and_resumes_exactly(tmp_path, monkeypatch):
    steps, state = _resume_check(tmp_path, monkeypatch, replay={"capacity": 2})
    assert sum(m["replay/replaced_groups"] for m in steps) >= 1
    assert state["arpo_replay"]["buffers"]
