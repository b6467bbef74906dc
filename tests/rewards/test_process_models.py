"""The `prm` process reward and the `prm_score` reward (rewards/process_models.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from postrl.learner.tiny import build_tokenizer
from postrl.rewards import REWARDS
from postrl.rewards import process_models as pm
from postrl.rewards.process import PROCESS_REWARDS, ProcessContext
from postrl.rollout.batch import RolloutBatch


class FakePRM:
    """Scores step k of every completion as 0.9, 0.5, 0.7, ... (fixed), and records what it saw."""

    separator = "\n"
    SCORES = [0.9, 0.5, 0.7]

    def __init__(self):
        self.seen = []

    def score_steps(self, prompts, steps):
        self.seen.append((list(prompts), [list(s) for s in steps]))
        return [self.SCORES[:len(s)] for s in steps]


@pytest.fixture
def fake(monkeypatch):
    model = FakePRM()
    monkeypatch.setattr(pm, "load_prm", lambda *a, **k: model)
    return model


def _ctx(texts, eos=True):
    tok = build_tokenizer()
    ids = [tok(t, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else []) for t in texts]
    batch = RolloutBatch.from_token_lists([[5]] * len(ids), ids, tok.pad_token_id)
    rows = [SimpleNamespace(prompt=f"p{i}", columns={}) for i in range(len(texts))]
    return ProcessContext(batch=batch, texts=list(texts), rows=rows, tokenizer=tok)


def test_aggregates_hand_computed():
    s = [0.9, 0.5, 0.7]
    assert pm.aggregate_steps(s, "min") == 0.5 and pm.aggregate_steps(s, "last") == 0.7
    assert pm.aggregate_steps(s, "product") == pytest.approx(0.315)  # 0.9 * 0.5 * 0.7
    assert pm.aggregate_steps(s, "mean") == pytest.approx(0.7)  # 2.1 / 3
    assert pm.aggregate_steps([], "min") == 0.0
    with pytest.raises(ValueError, match="aggregate must be one of"):
        pm.aggregate_steps(s, "none")


def test_prm_none_puts_each_step_score_on_its_end_token(fake):
    # "3+4=7\n" is tokens 0-5, "7-2=5\n" 6-11, "1" 12, EOS 13 (the blank tail joins the step "1")
    ctx = _ctx(["3+4=7\n7-2=5\n1", "9"])
    out = PROCESS_REWARDS["prm"](ctx, path="x", aggregate="none")
    assert out.step_ends == [[5, 11, 13], [1]]
    assert out.step_rewards == [[0.9, 0.5, 0.7], [0.9]]
    expected = torch.zeros(2, 14)
    expected[0, 5], expected[0, 11], expected[0, 13], expected[1, 1] = 0.9, 0.5, 0.7, 0.9
    assert torch.allclose(out.token_rewards, expected)
    assert fake.seen[0] == (["p0", "p1"], [["3+4=7", "7-2=5", "1"], ["9"]])


@pytest.mark.parametrize("aggregate, value", [("min", 0.5), ("last", 0.7), ("product", 0.315), ("mean", 0.7)])
def test_prm_aggregates_go_on_the_last_token(fake, aggregate, value):
    out = PROCESS_REWARDS["prm"](_ctx(["3+4=7\n7-2=5\n1"]), path="x", aggregate=aggregate)
    assert out.token_rewards[0, 13].item() == pytest.approx(value)
    assert out.token_rewards.sum().item() == pytest.approx(value)  # nothing anywhere else
    assert out.step_rewards == [[0.9, 0.5, 0.7]]  # step rewards are always filled


def test_prm_signed_scores_and_empty_completions(fake):
    out = PROCESS_REWARDS["prm"](_ctx(["1\n2", ""], eos=False), path="x", aggregate="none", score="signed")
    assert out.step_rewards == [[pytest.approx(0.8), pytest.approx(0.0)], []]  # 2p - 1
    assert out.step_ends[1] == [] and out.token_rewards[1].abs().sum() == 0


def test_prm_score_reward(fake):
    r = REWARDS["prm_score"](["a", "b"], ["1+1=2\n2+1=3", [{"role": "assistant", "content": "\n5\n\n"}]],
                             path="x", aggregate="product")
    assert r == [pytest.approx(0.45), pytest.approx(0.9)]
    assert fake.seen[0][1] == [["1+1=2", "2+1=3"], ["5"]]


@pytest.mark.parametrize("kwargs, match", [({}, "kwargs.path is required"),
                                           ({"path": "x", "aggregate": "max"}, "aggregate must be one of"),
                                           ({"path": "x", "score": "logit"}, "score must be"),
                                           ({"path": "x", "score": "signed", "aggregate": "product"}, "no meaning"),
                                           ({"path": "x", "aggregate": "none"}, "aggregate none gives one reward")])
def test_prm_score_errors(fake, kwargs, match):
    with pytest.raises(ValueError, match=match):
        REWARDS["prm_score"](["a"], ["1"], **kwargs)
