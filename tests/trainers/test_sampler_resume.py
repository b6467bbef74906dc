"""`postrl train` with a stateful sampler (vade): a run killed mid-way and resumed draws the same
prompts and ends with the same weights and sampler state as an unbroken run."""

import json

import torch
from helpers import kill_and_resume, tiny_rl_config
from safetensors.torch import load_file

from postrl.learner.checkpoint import STATE_FILE, list_checkpoints
from postrl.samplers.vade import Vade
from postrl.trainers import rl

PARITY = [{"name": "tiny_rewards:token_parity"}]  # 0/1 rewards a random model splits on: posteriors move


def test_killed_and_resumed_vade_run_draws_the_same_prompts_and_weights(tmp_path, monkeypatch):
    drawn = []
    real_next = Vade.next

    def recording_next(self, k):
        out = real_next(self, k)
        drawn.append(out)
        return out

    monkeypatch.setattr(Vade, "next", recording_next)

    def config(name):
        return tiny_rl_config(tmp_path / name, **{"rewards": PARITY, "train.steps": 4, "checkpoint.keep_last": 4,
                                                 "sampler.name": "vade", "sampler.kwargs": {"step_decay": 0.9}})

    full = config("full")
    rl.train(full)
    full_draws, drawn[:] = list(drawn), []
    broken = config("broken")
    kill_and_resume(monkeypatch, rl, "rl_step", lambda resume: rl.train(broken, resume=resume), kill_at=3)

    assert len(full_draws) == 4 and drawn == full_draws  # steps 0, 1 before the kill, 2, 3 after the resume
    assert len({i for b in full_draws for i in b}) > 4   # not one batch repeated
    last = [list_checkpoints(c.run_dir)[-1] for c in (full, broken)]
    assert last[0].name == last[1].name == "step_000004"
    x, y = (load_file(str(c / "model.safetensors")) for c in last)
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    a, b = (json.loads((c / STATE_FILE).read_text())["sampler"] for c in last)
    assert a == b and a["draws"] == 4 and len(a["rows"]) > 4
