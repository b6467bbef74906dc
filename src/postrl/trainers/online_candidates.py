"""One step's candidate responses and the pairs made from them (for `trainers/online_pref.py`).

    prompts -> responses per source (policy, gold, strong/weak, reference, opponent)
            -> rewards (RewardSet) -> judge verdicts -> pair rule -> `Pair`s with token ids

Sampled responses keep the token ids the engine produced (nothing is re-tokenised); only the
dataset's gold response is text, tokenised once as `postrl pref` tokenises responses (its own
ids, then EOS). The judge is `online.judge` when set, else sigmoid(r_a - r_b) of the rewards
(TRL's convention for a scalar reward: a 0/1 verifier gives 0.73 for right over wrong, 0.5 for a tie).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch

from postrl.data.loading import DataError
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams
from postrl.trainers.online_pairs import PAIR_RULES, Candidates, win_rates
from postrl.trainers.scoring import completion_token_lists, score_batch
from postrl.user_code import check_kwargs, load_attr

# offsets of each source's sampling seed: the sources draw independent streams in one step
SEED_OFFSETS = {"policy": 0, "strong": 1, "weak": 2, "reference": 3, "opponent": 4}


@dataclass
class Pair:
    """One (chosen, rejected) pair of a step, with what the loss and the logs read."""

    prompt: int
    """Position of its prompt among the step's prompts."""
    chosen: list[int]
    rejected: list[int]
    chosen_reward: float
    rejected_reward: float
    chosen_source: str
    rejected_source: str
    win_prob: float | None = None
    """P(chosen beats rejected) by the judge (losses that need "win_prob")."""
    chosen_win_rate: float | None = None
    rejected_win_rate: float | None = None
    kl_response: list[int] | None = None
    """A policy sample of the same prompt (losses that need "online_kl")."""


@dataclass
class StepPairs:
    pairs: list[Pair]
    prompts_without_pair: int
    identical_dropped: int
    policy_rewards: torch.Tensor
    """Total reward of every policy sample of the step (empty when the rule samples none)."""


def load_judge(spec) -> Callable[[list, list, list], list[float]]:
    """The pairwise judge of `online.judge` with its kwargs bound: fn(prompts, a, b) -> P(a beats b)."""
    if spec.name == "reward_model":
        from postrl.rewards.reward_model import judge

        if not spec.kwargs.get("path"):
            raise ValueError("online.judge: reward_model needs kwargs.path, the `final` directory of a `postrl rm` run")
        return functools.partial(judge, **spec.kwargs)
    what = f"online.judge.name={spec.name!r}"
    fn = load_attr(spec.name, what)
    if not callable(fn):
        raise TypeError(f"{what}: {spec.name.rsplit(':', 1)[1]} is a {type(fn).__name__}, not a function")
    check_kwargs(fn, spec.kwargs, what)
    return functools.partial(fn, **spec.kwargs)


def gold_ids(tokenizer, row, column: str, prompt_len: int, max_length: int) -> list[int]:
    """The row's reference response (`online.gold_column`) as token ids + EOS."""
    value = row.columns.get(column)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0].get("content")
    if not isinstance(value, str) or not value.strip():
        found = "is missing" if column not in row.columns else f"is {value!r}, not a non-empty string"
        raise DataError(f"row {row.index + 1}: column {column!r} {found}; online.gold_column must name the column "
                        f"holding each prompt's reference response (columns here: {', '.join(sorted(row.columns))})")
    ids = list(tokenizer(value, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
    if prompt_len + len(ids) > max_length:
        raise DataError(f"row {row.index + 1}: prompt + reference response are {prompt_len + len(ids)} tokens, more "
                        f"than train.max_length={max_length}; raise train.max_length")
    return ids


def sample(engines: dict, sources: list[str], prompt_ids: list[list[int]], params: SamplingParams,
           seed: int) -> dict[str, list[list[list[int]]]]:
    """source -> per prompt, the `params.n` sampled token-id lists of that source's engine."""
    out = {}
    for src in sources:
        batch = engines[src].generate(prompt_ids, params, seed=seed + SEED_OFFSETS[src])
        ids = completion_token_lists(batch)
        out[src] = [[ids[r] for r in range(len(ids)) if int(batch.group_ids[r]) == g] for g in range(len(prompt_ids))]
    return out


def make_pairs(cfg, tokenizer, rows, prompt_ids, responses: list[list[list[int]]], sources: list[list[str]],
               reward_set, judge: Callable | None, rng: torch.Generator, loss_needs: tuple[str, ...]) -> StepPairs:
    """Score every candidate, judge what the rule and loss need, apply the rule, build the pairs."""
    flat = [r for group in responses for r in group]
    groups = [g for g, group in enumerate(responses) for _ in group]
    batch = RolloutBatch.from_token_lists([prompt_ids[g] for g in groups], flat, tokenizer.pad_token_id,
                                          group_ids=groups)
    total = score_batch(batch, rows, tokenizer, reward_set).total.tolist()
    texts = batch.metadata["completion_text"]
    start = [0]
    for group in responses:
        start.append(start[-1] + len(group))
    rule = PAIR_RULES.get(cfg.online.pair_rule)
    needs = rule.needs

    def as_completion(g: int, text: str):
        return [{"role": "assistant", "content": text}] if isinstance(rows[g].prompt, list) else text

    # every comparison the rule needs, judged in one call
    wanted: list[tuple[int, int, int]] = []  # (group, i, j) -> P(i beats j)
    for g in range(len(responses)):
        pol = [i for i, s in enumerate(sources[g]) if s == "policy"]
        if "judge" in needs:
            wanted += [(g, pol[k], pol[k + 1]) for k in range(0, len(pol) - 1, 2)]
        if "judge_all" in needs:
            wanted += [(g, a, b) for x, a in enumerate(pol) for b in pol[x + 1:]]
        if "reference_sample" in needs:
            ref = [i for i, s in enumerate(sources[g]) if s == "reference"]
            wanted += [(g, a, b) for a, b in zip(pol, ref)]

    def verdicts(triples: list[tuple[int, int, int]]) -> list[float]:
        if not triples:
            return []
        if judge is None:  # Bradley-Terry on the rewards (NaN counts as 0, as in the weighted sum)
            r = [[0.0 if math.isnan(total[start[g] + k]) else total[start[g] + k] for k in (i, j)]
                 for g, i, j in triples]
            return [1.0 / (1.0 + math.exp(b - a)) for a, b in r]
        p = judge([rows[g].prompt for g, _, _ in triples],
                  [as_completion(g, texts[start[g] + i]) for g, i, _ in triples],
                  [as_completion(g, texts[start[g] + j]) for g, _, j in triples])
        if len(p) != len(triples) or any(not 0.0 <= float(x) <= 1.0 for x in p):
            raise ValueError(f"online.judge returned {len(p)} values for {len(triples)} comparisons; a judge returns "
                             "one probability in [0, 1] per (prompt, a, b)")
        return [float(x) for x in p]

    judged: dict[int, list[tuple[int, int, float]]] = {g: [] for g in range(len(responses))}
    for (g, i, j), p in zip(wanted, verdicts(wanted)):
        judged[g].append((i, j, p))

    chosen_idx: list[tuple[int, int, int]] = []
    without, identical = 0, 0
    for g in range(len(responses)):
        c = Candidates(rewards=total[start[g]:start[g + 1]], sources=sources[g], judged=judged[g], rng=rng)
        found = [(i, j) for i, j in rule.fn(c, **cfg.online.pair_kwargs)]
        kept = [(i, j) for i, j in found if responses[g][i] != responses[g][j]]
        identical += len(found) - len(kept)
        without += not kept
        chosen_idx += [(g, i, j) for i, j in kept]

    probs = verdicts(chosen_idx) if "win_prob" in loss_needs else [None] * len(chosen_idx)
    rates = {g: win_rates(Candidates(total[start[g]:start[g + 1]], sources[g], judged[g]))
             for g in {g for g, _, _ in chosen_idx}} if "win_rates" in loss_needs else {}
    pairs = []
    for (g, i, j), p in zip(chosen_idx, probs):
        pol = [k for k, s in enumerate(sources[g]) if s == "policy"]
        pairs.append(Pair(prompt=g, chosen=responses[g][i], rejected=responses[g][j],
                          chosen_reward=total[start[g] + i], rejected_reward=total[start[g] + j],
                          chosen_source=sources[g][i], rejected_source=sources[g][j], win_prob=p,
                          chosen_win_rate=rates[g].get(i) if rates else None,
                          rejected_win_rate=rates[g].get(j) if rates else None,
                          kl_response=responses[g][pol[0]] if pol and "online_kl" in loss_needs else None))
    policy_rewards = torch.tensor([total[start[g] + k] for g in range(len(responses))
                                   for k, s in enumerate(sources[g]) if s == "policy"])
    return StepPairs(pairs, without, identical, policy_rewards)


def pair_metrics(sp: StepPairs, n_prompts: int) -> dict[str, float]:
    """Per-step pair statistics: counts and the rewards of chosen and rejected responses."""
    out = {"pairs/count": float(len(sp.pairs)), "pairs/prompts_without_pair": sp.prompts_without_pair / n_prompts,
           "pairs/identical_dropped": float(sp.identical_dropped)}
    if sp.policy_rewards.numel():
        out["reward/policy_mean"] = float(torch.nan_to_num(sp.policy_rewards, nan=0.0).mean())
    scored = [p for p in sp.pairs if not (math.isnan(p.chosen_reward) or math.isnan(p.rejected_reward))]
    if scored:
        c = sum(p.chosen_reward for p in scored) / len(scored)
        r = sum(p.rejected_reward for p in scored) / len(scored)
        out.update({"pairs/reward_chosen": c, "pairs/reward_rejected": r, "pairs/reward_margin": c - r})
    return out
