"""HyPO's online samples in `postrl pref` (trainers/pref_online.py): what the loss receives, that the
reference model is loaded once and kept, exact resume, and the config check."""

import json

import pytest
import torch

from postrl.config import ConfigError
from postrl.trainers import pref, pref_online

from helpers import kill_and_resume, same_final_weights
from trainers.test_pref import _model, config, register

ONLINE = {"loss.name": "hypo", "online.max_new_tokens": 4}


def test_the_loss_gets_policy_samples_with_gradient_and_their_reference_log_probs(tmp_path, monkeypatch):
    seen, sampled = [], []
    real_sample = pref_online.OnlineKL.sample

    def spy_sample(self, examples, seed):
        out = real_sample(self, examples, seed)
        sampled.append(([ex.prompt_ids for ex in examples], out, seed))
        return out

    def spy(inp):
        seen.append(inp)
        from postrl.algorithms.preference_auxiliary import hypo
        return hypo(inp)

    monkeypatch.setattr(pref_online.OnlineKL, "sample", spy_sample)
    register(monkeypatch, "test_hypo", spy, ("reference", "online_kl"))
    cfg = config(tmp_path, **{**ONLINE, "loss.name": "test_hypo", "eval.before": False})
    p = pref.Parts(cfg, torch.device("cpu"), *_model(cfg))
    pref.load_data(p)
    p.online = pref_online.OnlineKL(p)
    p.ref = pref.reference_cache(p)
    p.step = 3
    pref.train_step(p, [5, 6, 7, 8, 9])  # micro-batches of 4 and 1
    prompts, responses, seed = sampled[0]
    assert prompts == [p.examples["train"][i].prompt_ids for i in range(5, 10)]  # one sample per example
    assert seed == pref_online.step_seed(cfg.seed, 3) and all(1 <= len(r) <= 4 for r in responses)
    train = [x for x in seen if x.chosen_logps.requires_grad]
    assert [len(x.kl_logps) for x in train] == [4, 1]
    assert all(x.kl_logps.requires_grad and not x.kl_ref_logps.requires_grad for x in train)
    # the policy has not moved from the reference: the two log-probs of each sample agree
    for x in train:
        assert torch.allclose(x.kl_logps.detach(), x.kl_ref_logps, atol=1e-5)
    # and they are the log-probs of the sampled tokens after the example's prompt
    ex, y = p.examples["train"][5], responses[0]
    with torch.no_grad():
        logits = p.model(torch.tensor([ex.prompt_ids + y])).logits[0].float()
    by_hand = torch.log_softmax(logits[len(ex.prompt_ids) - 1:-1], -1).gather(-1, torch.tensor(y)[:, None]).sum()
    assert float(train[0].kl_ref_logps[0]) == pytest.approx(float(by_hand), abs=1e-4)


def test_one_reference_model_serves_the_cache_and_the_online_samples(tmp_path, monkeypatch):
    loads = []
    real = pref_online.load_reference

    def counting(*a, **k):
        loads.append(1)
        return real(*a, **k)

    monkeypatch.setattr(pref_online, "load_reference", counting)
    monkeypatch.setattr(pref, "load_reference", lambda *a, **k: pytest.fail("a second reference model was loaded"))
    out = pref.train(config(tmp_path, **ONLINE))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "hypo/kl" in r]
    # step 1 samples from the initial policy, which is the reference: the KL estimate is exactly 0
    assert loads == [1] and train[0]["step"] == 1 and train[0]["hypo/kl"] == 0.0 and train[1]["hypo/kl"] != 0.0
    assert out["pref_steps"] == 2


def test_a_stopped_and_resumed_hypo_run_ends_with_the_same_weights(tmp_path, monkeypatch):
    over = {**ONLINE, "train.steps": 4, "checkpoint.every": 2}
    pref.train(config(tmp_path, name="straight", **over))
    kill_and_resume(monkeypatch, pref, "train_step",
                    lambda resume: pref.train(config(tmp_path, name="stopped", **over), resume=resume))
    assert same_final_weights(tmp_path / "straight", tmp_path / "stopped")
    kl = [[json.loads(x).get("hypo/kl") for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()]
          for n in ("straight", "stopped")]
    assert kl[0] == kl[1]


def test_online_settings_need_a_loss_that_samples_online(tmp_path):
    with pytest.raises(ConfigError, match="online is set but loss.name='dpo' samples no online responses"):
        config(tmp_path, **{"online.max_new_tokens": 4})
