"""SPO-chain: cut points, segment advantages from given values, and the Monte-Carlo values
themselves with a fake engine whose continuations are fixed (so every value is known by hand)."""

import math

import pytest
import torch

from postrl.algorithms import ADVANTAGES
from postrl.algorithms.advantages_segment import segment_spo
from postrl.algorithms.segment_mc import check_hparams, cut_points, estimate_segment_values, segment_boundaries
from postrl.config import ConfigError, RLConfig, resolve
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams

HP = {"threshold": 0.9, "cutpoint_interval": 1, "max_segments": None, "mc_samples": 2}


def _batch(prompts, completions, probs, rewards, group_ids):
    """Left-padded prompts, right-padded completions, behaviour log-probs from the given probabilities."""
    B, P, T = len(prompts), max(map(len, prompts)), max(map(len, completions))
    prompt_ids, prompt_mask = torch.zeros(B, P, dtype=torch.long), torch.zeros(B, P, dtype=torch.long)
    completion_ids, mask = torch.zeros(B, T, dtype=torch.long), torch.zeros(B, T, dtype=torch.long)
    behavior = torch.zeros(B, T)
    for i, (p, c, q) in enumerate(zip(prompts, completions, probs)):
        prompt_ids[i, P - len(p):], prompt_mask[i, P - len(p):] = torch.tensor(p), 1
        completion_ids[i, :len(c)], mask[i, :len(c)] = torch.tensor(c), 1
        behavior[i, :len(q)] = torch.log(torch.tensor(q))
    return RolloutBatch(prompt_ids, prompt_mask, completion_ids, mask, mask.float(), behavior,
                        torch.tensor(group_ids), rewards=torch.tensor(rewards))


def test_cut_points_start_a_segment_every_interval_low_probability_tokens():
    # probabilities 0.95 0.5 0.99 0.8 0.3 0.97 0.2 0.6 -> below 0.9 at 1, 3, 4, 6, 7
    low = torch.tensor([0.95, 0.5, 0.99, 0.8, 0.3, 0.97, 0.2, 0.6]) < 0.9
    assert cut_points(low, 1) == [1, 3, 4, 6, 7]
    assert cut_points(low, 2) == [1, 4, 7]  # every 2nd low-probability token, from the first
    assert cut_points(low, 5) == [1]
    # at most 2 segments: interval widens to ceil(5 / 2) = 3 -> starts at low[0], low[3]
    assert cut_points(low, 2, max_segments=2) == [1, 6]
    assert cut_points(low, 2, max_segments=3) == [1, 4, 7]  # already within the cap
    assert cut_points(torch.zeros(4, dtype=torch.bool), 5) == []


def test_boundaries_ignore_tokens_outside_the_loss_mask():
    batch = _batch([[5]], [[11, 12, 13]], [[0.5, 0.5, 0.5]], [1.0], [0])
    batch.loss_mask[0, 1] = 0  # an environment token: never a cut point
    assert segment_boundaries(batch, threshold=0.9, cutpoint_interval=1) == [[0, 2]]


def _spo_batch():
    # row 0: probabilities 0.95 0.5 0.99 0.8 -> cut points 1, 3; row 1: 0.3 0.95 -> cut point 0
    return _batch([[5, 6], [7]], [[11, 12, 13, 14], [21, 22]], [[0.95, 0.5, 0.99, 0.8], [0.3, 0.95]],
                  [1.0, 0.0], [0, 1])


def test_segment_advantages_are_value_differences_on_low_probability_tokens():
    batch = _spo_batch()
    batch.metadata = {"segment_cuts": [[1, 3], [0]], "segment_values": [[0.25, 0.4], [0.15]]}
    # row 0: [0,1) before the first cut -> 0; [1,3) -> V(s_3) - V(s_1) = 0.4 - 0.25 = 0.15; [3,4) -> R - V(s_3) = 0.6
    # row 1: [0,2) -> R - V(s_0) = 0 - 0.15 = -0.15
    no_mask = segment_spo(batch, cutpoint_interval=1, prob_mask=False)
    torch.testing.assert_close(no_mask, torch.tensor([[0.0, 0.15, 0.15, 0.6], [-0.15, -0.15, 0.0, 0.0]]))
    # probability mask: only tokens with p < 0.9 keep theirs (row 0: t1, t3; row 1: t0)
    masked = segment_spo(batch, cutpoint_interval=1)
    torch.testing.assert_close(masked, torch.tensor([[0.0, 0.15, 0.0, 0.6], [-0.15, 0.0, 0.0, 0.0]]))


def test_a_row_without_cut_points_gets_zero_and_values_telescope_to_the_return():
    batch = _batch([[5]], [[11, 12, 13]], [[0.95, 0.99, 0.97]], [1.0], [0])
    batch.metadata = {"segment_cuts": [[]], "segment_values": [[]]}
    assert segment_spo(batch, prob_mask=False).abs().sum() == 0
    # advantages summed over segment starts telescope: sum_k A_k = R - V(s_t_0)
    batch = _spo_batch()
    batch.metadata = {"segment_cuts": [[1, 3], [0]], "segment_values": [[0.25, 0.4], [0.15]]}
    adv = segment_spo(batch, cutpoint_interval=1)
    assert math.isclose(float(adv[0, 1] + adv[0, 3]), 1.0 - 0.25, abs_tol=1e-6)


def test_segment_spo_refuses_missing_values_and_dense_rewards():
    batch = _spo_batch()
    with pytest.raises(ValueError, match="mc_values"):
        segment_spo(batch)
    batch.metadata = {"segment_cuts": [[1, 3], [0]], "segment_values": [[0.25, 0.4], [0.15]]}
    batch.token_rewards = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="kl_in_reward"):
        segment_spo(batch)


class FixedEngine:
    """Sample j of every prefix continues with j + 1 copies of token 100 + j; records its calls."""

    def __init__(self):
        self.calls = []

    def generate(self, prompt_ids, params, seed=0):
        self.calls.append((prompt_ids, params, seed))
        rows = [(u, [100 + j] * (j + 1)) for u in range(len(prompt_ids)) for j in range(params.n)]
        T = max(len(c) for _, c in rows)
        ids, mask = torch.zeros(len(rows), T, dtype=torch.long), torch.zeros(len(rows), T, dtype=torch.long)
        for r, (_, c) in enumerate(rows):
            ids[r, :len(c)], mask[r, :len(c)] = torch.tensor(c), 1
        return RolloutBatch(torch.zeros(len(rows), 1, dtype=torch.long), torch.ones(len(rows), 1, dtype=torch.long),
                            ids, mask, mask.float(), torch.zeros(len(rows), T),
                            torch.tensor([u for u, _ in rows]))


def _length_reward(scored):
    """Reward = full completion length / 10, checking each row keeps its group's prompt."""
    scored_prompts = [ids[m.bool()].tolist() for ids, m in zip(scored.prompt_ids, scored.prompt_mask)]
    assert all(p == ([5, 6] if g == 0 else [7]) for p, g in zip(scored_prompts, scored.group_ids.tolist()))
    return scored.completion_mask.sum(-1).float() / 10


def test_monte_carlo_values_average_the_rewards_of_fixed_continuations():
    batch = _spo_batch()
    # a third row identical to row 1 (same prompt, same completion): its prefix is sampled once
    batch = RolloutBatch.concat([batch, batch.select([1])])
    engine = FixedEngine()
    estimate_segment_values(batch, generate=engine.generate, score=_length_reward,
                            params=SamplingParams(n=8, max_new_tokens=4), seed=7, hparams=HP)
    (prefixes, params, seed), = engine.calls
    # prefixes: row 0 at b=1 [5,6 | 11], at b=3 [5,6 | 11,12,13]; row 1 (and 2) at b=0 [7]
    assert prefixes == [[5, 6, 11], [5, 6, 11, 12, 13], [7]]
    assert params.n == 2 and params.max_new_tokens == 4 and seed != 7  # mc_samples; largest budget; own seed
    # continuations: [100] (1 token) and [101, 101] (2 tokens), each cut to the budget 4 - b
    # row 0, b=1: lengths 1+1, 1+2 -> (0.2 + 0.3) / 2 = 0.25
    # row 0, b=3: budget 1 cuts [101, 101] to [101]: lengths 3+1, 3+1 -> 0.4
    # row 1, b=0: lengths 0+1, 0+2 -> (0.1 + 0.2) / 2 = 0.15
    assert batch.metadata["segment_cuts"] == [[1, 3], [0], [0]]
    values = batch.metadata["segment_values"]
    assert [[round(v, 6) for v in row] for row in values] == [[0.25, 0.4], [0.15], [0.15]]
    adv = segment_spo(batch, cutpoint_interval=1, mc_samples=2)
    torch.testing.assert_close(adv[0], torch.tensor([0.0, 0.15, 0.0, 0.6]))  # 0.4 - 0.25; 1.0 - 0.4


def test_no_cut_points_means_no_extra_rollouts():
    batch = _batch([[5]], [[11, 12]], [[0.95, 0.99]], [1.0], [0])
    engine = FixedEngine()
    estimate_segment_values(batch, generate=engine.generate, score=_length_reward,
                            params=SamplingParams(max_new_tokens=4), seed=0, hparams=HP)
    assert engine.calls == [] and batch.metadata["segment_cuts"] == [[]] and batch.metadata["segment_values"] == [[]]


@pytest.mark.parametrize("key,value", [("threshold", 0.0), ("threshold", 1.5), ("cutpoint_interval", 0),
                                       ("max_segments", 0), ("mc_samples", 0)])
def test_bad_hyper_parameters_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"advantage_kwargs.{key}"):
        check_hparams({**HP, key: value})
    with pytest.raises(ConfigError, match=key):
        resolve(RLConfig, {"algorithm": {"preset": "segment_spo", "advantage_kwargs": {key: value}}})


def test_config_refuses_asynchronous_rollouts_and_kl_in_the_reward():
    with pytest.raises(ConfigError, match="max_off_policy_steps"):
        resolve(RLConfig, {"algorithm": {"preset": "segment_spo"}, "distributed": {"max_off_policy_steps": 1}})
    with pytest.raises(ConfigError, match="kl_in_reward=false"):
        resolve(RLConfig, {"algorithm": {"preset": "segment_spo", "kl_in_reward": True}})


def test_defaults_are_the_papers_spo_chain_int5_setting():
    entry = ADVANTAGES.get("segment_spo")
    assert entry.needs == ("mc_values",) and entry.arxiv == "2505.23564"
    assert entry.defaults == {"threshold": 0.9, "cutpoint_interval": 5, "max_segments": None, "mc_samples": 9,
                              "prob_mask": True}
