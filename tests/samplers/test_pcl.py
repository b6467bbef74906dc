"""pcl: hashed prompt features, one Adam step by hand, exact resume of the value model, and on a
constructed task (pass rate set by the number of digits) the predictor learns the ranking and the
batches concentrate on the prompts near the target."""

import json
import math
import random

import pytest
import torch

from postrl.data.loading import PromptRow
from postrl.samplers import SAMPLERS, build_sampler
from postrl.samplers.value_model import hashed_features, prompt_text


def rows_of(texts):
    return [PromptRow(i, t, None, {}) for i, t in enumerate(texts)]


def test_features_count_character_ngrams_and_tokens():
    # "1+2=": 1-grams 1 + 2 =, 2-grams 1+ +2 2=, 3-grams 1+2 +2=, tokens 1 + 2 =: 13 keys
    assert hashed_features("1+2=", 1) == {0: math.log1p(13)}        # one bin holds all 13 counts
    f = hashed_features("1+2=", 1 << 20)                             # no collisions among 13 keys here
    assert len(f) == 13 and all(v == math.log1p(1) for v in f.values())
    assert hashed_features("1+2=", 64) == hashed_features("1+2=", 64)  # crc32: the same bins in every process
    assert prompt_text([{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+2="}]) == \
        "be brief\n1+2="


def test_one_adam_step_by_hand():
    s = SAMPLERS["pcl"](1, 0, buckets=1, lr=0.05, rows=rows_of(["1+2="]))
    assert s.model.predict([0]) == [0.5]                             # theta = 0
    s.update([0], [[1.0, 1.0]])                                      # target 1
    # loss (0.5 - 1)^2 = 0.25; Adam's first step moves each weight by lr * g/|g| (up to eps = 1e-8),
    # here +0.05 for the feature log(14) and for the bias: V = sigmoid(0.05 * (log 14 + 1)) = 0.545365
    assert s.last_loss == 0.25
    assert torch.allclose(s.model.theta.detach(), torch.tensor([0.05, 0.05]))
    assert math.isclose(s.model.predict([0])[0], 1 / (1 + math.exp(-0.05 * (math.log1p(13) + 1))), rel_tol=1e-6)


def test_before_any_feedback_the_batch_is_the_head_of_a_uniform_pool():
    # V = 1/2 for every prompt ties every candidate: the batch is the first k of the uniform pool
    s = SAMPLERS["pcl"](10, 0, rows=rows_of([str(i) for i in range(10)]), candidate_ratio=2)
    counts = [0] * 10
    for _ in range(3000):
        for i in s.next(2):
            counts[i] += 1
    assert all(abs(c / 6000 - 0.1) < 0.015 for c in counts), counts


def test_value_model_state_resumes_bit_for_bit():
    texts = [f"{i}*{i + 3}=" for i in range(12)]
    a = SAMPLERS["pcl"](12, 1, rows=rows_of(texts), buckets=64)
    rng = random.Random(0)
    for _ in range(3):
        idx = a.next(4)
        a.update(idx, [[float(rng.random() < 0.5) for _ in range(4)] for _ in idx])
    state = json.loads(json.dumps(a.state_dict()))
    assert state["model"]["adam"]["step"] == 3.0
    b = SAMPLERS["pcl"](12, 1, rows=rows_of(texts), buckets=64)
    b.load_state_dict(state)
    assert torch.equal(a.model.theta, b.model.theta) and a.next(4) == b.next(4)
    a.update([0, 1], [[1.0, 0.0], [0.0, 0.0]])
    b.update([0, 1], [[1.0, 0.0], [0.0, 0.0]])
    assert torch.equal(a.model.theta, b.model.theta)
    with pytest.raises(ValueError, match="64 feature bins but sampler.kwargs.buckets is 32"):
        SAMPLERS["pcl"](12, 1, rows=rows_of(texts), buckets=32).load_state_dict(state)


def test_needs_the_rows():
    with pytest.raises(ValueError, match="pcl: needs the 3 training rows"):
        SAMPLERS["pcl"](3, 0, rows=None)
    assert build_sampler("pcl", {}, 2, 0, rows=rows_of(["a", "b"])).dataset_size == 2


def test_learns_that_more_digits_is_harder_and_picks_the_middle():
    # 300 sums: 100 with 1-digit terms pass 90% of the time, 100 with 2-digit terms 50%, 100 with
    # 3-digit terms 10%. The target 0.5 sits on the 2-digit prompts (a third of the data).
    gen, texts, rate = random.Random(0), [], []
    for digits, p in ((1, 0.9), (2, 0.5), (3, 0.1)):
        lo, hi = (0 if digits == 1 else 10 ** (digits - 1)), 10 ** digits - 1
        for _ in range(100):
            texts.append(f"{gen.randint(lo, hi)}+{gen.randint(lo, hi)}=")
            rate.append(p)
    s = SAMPLERS["pcl"](300, 0, rows=rows_of(texts))
    sim, batches = random.Random(1), []
    for _ in range(40):
        idx = s.next(8)
        batches.append(idx)
        s.update(idx, [[float(sim.random() < rate[i]) for _ in range(8)] for i in idx])
    assert s.metrics()["pcl_value_loss"] == s.last_loss >= 0.0  # logged by the trainer as sampler/pcl_value_loss
    pred = s.model.predict(list(range(300)))
    easy, mid, hard = (sum(pred[g * 100:(g + 1) * 100]) / 100 for g in range(3))
    assert easy > 0.75 and 0.35 < mid < 0.65 and hard < 0.3, (easy, mid, hard)   # measured 0.92, 0.52, 0.18
    last = [i for b in batches[-10:] for i in b]
    assert sum(100 <= i < 200 for i in last) / len(last) > 0.7                   # uniform: 1/3; measured 0.84
