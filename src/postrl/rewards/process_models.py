"""A trained process reward model as a process reward (`prm`) and as a scalar reward (`prm_score`).

The PRM is a `postrl prm` run's `final` directory (or a checkpoint). It is loaded once per
process and path (`load_prm`), like the outcome reward model. A completion is cut into steps at
the PRM's own separator (saved with it); each step's score is the PRM's probability that the
solution is still correct after that step. `aggregate` turns the step scores into rewards:

    min      min_k p_k        the weakest step decides (Lightman et al. 2305.20050; PURE 2504.15275)
    product  prod_k p_k       P(every step correct) if step errors were independent (2305.20050)
    last     p_K              the score after the final step (it already conditions on the rest)
    mean     1/K sum_k p_k
    none     p_k at the end token of step k (dense: an RL return then sums them)

min/product/last/mean give one number per completion (on its last token as a process reward);
`score: signed` uses 2p - 1 in [-1, 1] instead of p (PURE's p(correct) - p(wrong)).
"""

from __future__ import annotations

import functools
import math
from typing import Literal, Sequence

import torch

from postrl.rewards.process import (PROCESS_REWARDS, ProcessContext, ProcessRewards, completion_token_lists,
                                    scatter_step_rewards, token_steps)
from postrl.rewards.registry import REWARDS

Aggregate = Literal["min", "last", "product", "mean", "none"]
AGGREGATES = ("min", "last", "product", "mean", "none")


@functools.lru_cache(maxsize=8)
def load_prm(path: str, device: str = "auto", batch_size: int = 32, separator: str | None = None):
    """The `ProcessRewardModel` at `path`, loaded once per (path, device, batch size, separator)."""
    from postrl.learner.process_model import ProcessRewardModel

    return ProcessRewardModel.load(path, device=device, batch_size=batch_size, separator=separator)


def aggregate_steps(scores: Sequence[float], how: str) -> float:
    """One number from a completion's step scores; 0.0 for a completion without steps."""
    if how not in AGGREGATES or how == "none":
        raise ValueError(f"aggregate must be one of {', '.join(a for a in AGGREGATES if a != 'none')} for a "
                         f"scalar score, got {how!r}")
    if not scores:
        return 0.0
    if how == "min":
        return float(min(scores))
    if how == "last":
        return float(scores[-1])
    if how == "product":
        return float(math.prod(scores))
    return float(sum(scores) / len(scores))


def _check(path, aggregate, score, batch_size, who: str) -> None:
    if not path:
        raise ValueError(f"{who}: kwargs.path is required: the directory of a trained process reward model (the "
                         f"`final` directory of a `postrl prm` run), e.g. "
                         f"{{name: {who}, kwargs: {{path: runs/prm/final}}}}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"{who}: aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    if score not in ("prob", "signed"):
        raise ValueError(f"{who}: score must be 'prob' (p) or 'signed' (2p - 1), got {score!r}")
    if batch_size < 1:
        raise ValueError(f"{who}: batch_size must be >= 1, got {batch_size}")
    if aggregate == "product" and score == "signed":
        raise ValueError(f"{who}: aggregate product multiplies probabilities; with score signed (2p - 1 in [-1, 1]) "
                         "the product has no meaning: use score prob, or aggregate min/last/mean")


def _transform(steps: list[list[float]], score: str) -> list[list[float]]:
    return steps if score == "prob" else [[2.0 * p - 1.0 for p in s] for s in steps]


@PROCESS_REWARDS.register("prm", paper="Let's Verify Step by Step", arxiv="2305.20050",
                          summary="a trained PRM's step scores at the step ends, or min/product/last/mean of them "
                          "on the last token")
def prm(ctx: ProcessContext, *, path: str | None = None, aggregate: Aggregate = "min",
        score: Literal["prob", "signed"] = "prob", separator: str | None = None, device: str = "auto",
        batch_size: int = 32) -> ProcessRewards:
    """Process reward model scores of the policy's steps.

        steps:   the completion's tokens cut at the PRM's separator (rewards.process.token_steps)
        p_k      = sigmoid(PRM head at the end of step k | prompt, steps 1..k)   (2p_k - 1: score=signed)
        none:    r_t = p_k at the end token of step k, 0 elsewhere (dense)
        min / product / last / mean:  r_T = min_k p_k / prod_k p_k / p_K / mean_k p_k on the last
                 token, 0 elsewhere (an outcome-style score of the whole solution)
        step_rewards = [p_1 .. p_K] always (what step-level advantage estimators read)

    `path`: the PRM directory (required). `separator`: only for a PRM without a saved one (a TRL
    PRM). A completion without steps gets no reward. The prompt is the dataset row's, rendered
    as the PRM was trained (its chat template setting); step texts are decoded from the
    sampled tokens. 2305.20050 scores a solution by the product of its step probabilities
    ("every step correct"); the default `min` follows PURE (2504.15275), which finds min-form
    credit robust to reward hacking in RL.
    """
    _check(path, aggregate, score, batch_size, "prm")
    model = load_prm(str(path), device, batch_size, separator)
    B, T = ctx.batch.completion_ids.shape
    steps = [token_steps(ids, ctx.tokenizer, model.separator) for ids in completion_token_lists(ctx.batch)]
    scores = _transform(model.score_steps([r.prompt for r in ctx.rows], [[s for _, s in st] for st in steps]), score)
    ends = [[e for e, _ in st] for st in steps]
    if aggregate == "none":
        dense = scatter_step_rewards(scores, ends, (B, T))
    else:
        dense = torch.zeros(B, T)
        for i, (s, e) in enumerate(zip(scores, ends)):
            if e:
                dense[i, e[-1]] = aggregate_steps(s, aggregate)
    return ProcessRewards(token_rewards=dense, step_rewards=scores, step_ends=ends)


@REWARDS.register("prm_score", paper="Let's Verify Step by Step", arxiv="2305.20050",
                  summary="a trained PRM's step scores aggregated to one reward (min, product, last or mean)")
def prm_score(prompts: list, completions: list, *, path: str | None = None,
              aggregate: Literal["min", "last", "product", "mean"] = "min", score: Literal["prob", "signed"] = "prob",
              separator: str | None = None, device: str = "auto", batch_size: int = 32, **kwargs) -> list[float]:
    """A process reward model as an ordinary (outcome) reward.

        steps  = completion text split at the PRM's separator, blank steps dropped
        r      = min_k p_k | prod_k p_k | p_K | mean_k p_k      (p_k: 2p_k - 1 with score=signed)

    p_k is the PRM's probability that the solution is still correct after step k (see `prm`);
    a completion without steps gets 0. Same model loading and rendering as the `prm` process
    reward; this one re-splits the decoded text, so it works in `rewards:` of every command.
    """
    from postrl.learner.process_model import split_steps
    from postrl.rewards.builtin import completion_text

    _check(path, aggregate, score, batch_size, "prm_score")
    if aggregate == "none":
        raise ValueError("prm_score: aggregate none gives one reward per step, not per completion; use the `prm` "
                         "process reward (process_rewards: in postrl train) for dense step rewards")
    model = load_prm(str(path), device, batch_size, separator)
    steps = [split_steps(completion_text(c), model.separator) for c in completions]
    scores = _transform(model.score_steps(list(prompts), steps), score)
    return [aggregate_steps(s, aggregate) for s in scores]
