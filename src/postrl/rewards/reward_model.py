"""A trained reward model as a reward function (`reward_model`) and as a pairwise judge (`judge`).

The model is a `postrl rm` run's `final` directory (or a checkpoint, or any HF sequence-
classification model with one label). It is loaded once per process and path (`load_cached`), so
a reward worker or an online preference loop that calls it every step pays the load once. Each
(prompt, completion) is rendered exactly as `postrl rm` rendered its pairs (the settings saved
with the model: chat template or raw text, system prompt, then the completion and EOS), so the
policy is scored on the distribution the RM was trained on.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, Sequence

import torch

from postrl.rewards.registry import REWARDS


@functools.lru_cache(maxsize=8)
def load_cached(path: str, device: str = "auto", batch_size: int = 32):
    """The `RewardModel` at `path`, loaded once per (path, device, batch size) in this process."""
    from postrl.learner.reward_model import RewardModel

    return RewardModel.load(path, device=device, batch_size=batch_size)


@functools.lru_cache(maxsize=8)
def _policy_vocab(name: str) -> dict[str, int]:
    from postrl.config import ModelSection
    from postrl.learner.models import load_tokenizer

    return load_tokenizer(ModelSection(name_or_path=name)).get_vocab()


def check_same_vocabulary(rm, policy_tokenizer: str) -> None:
    """Raise unless the policy's tokenizer (`model.tokenizer` or `model.name_or_path`) maps every
    token to the same id as the reward model's: needed to score the policy's token ids directly."""
    if rm.tokenizer.get_vocab() != _policy_vocab(policy_tokenizer):
        raise ValueError(f"reward_model: the reward model {rm.path!r} and the policy {policy_tokenizer!r} have "
                         "different vocabularies, so the policy's completion_ids mean other tokens to it; use "
                         "inputs: text (re-tokenise the decoded completions with the reward model's tokenizer) or "
                         "a reward model trained on the policy's tokenizer")


@REWARDS.register("reward_model", paper="Training language models to follow instructions with human feedback "
                  "(InstructGPT)", arxiv="2203.02155",
                  summary="the scalar score of a Bradley-Terry reward model trained by `postrl rm`",
                  needs=("policy_tokenizer",))
def reward_model(prompts: list, completions: list, completion_ids: list | None = None, *, path: str | None = None,
                 batch_size: int = 32, normalize: bool = False, device: str = "auto",
                 inputs: Literal["text", "ids"] = "text", policy_tokenizer: str | None = None,
                 **kwargs) -> list[float]:
    """The score of a trained reward model for each completion.

        r = RM(x, y)                  the head's output on the last token of the rendered prompt x,
                                      then the completion y, then EOS (as `postrl rm` rendered pairs)
        r = (RM(x, y) - mean) / std   normalize=True; mean and std of the RM's rewards on its held-out
                                      pairs, saved by `postrl rm` (OpenRLHF's `normalize_reward`)

    `path`: the RM directory (required). `inputs`: text re-tokenises each decoded completion with
    the RM's tokenizer, exactly as in RM training, and works whatever the policy's tokenizer;
    ids appends the policy's sampled `completion_ids` to the RM-rendered prompt without
    re-tokenising, which needs the same vocabulary (checked against `policy_tokenizer`, which a
    config fills with the policy's tokenizer). Scores `batch_size` sequences per forward on
    `device`; the model is loaded once per process.
    """
    if not path:
        raise ValueError("reward_model: kwargs.path is required: the directory of a trained reward model "
                         "(the `final` directory of a `postrl rm` run), e.g. rewards: [{name: reward_model, "
                         "kwargs: {path: runs/rm/final}}]")
    if inputs not in ("text", "ids"):
        raise ValueError(f"reward_model: inputs must be 'text' or 'ids', got {inputs!r}")
    if batch_size < 1:
        raise ValueError(f"reward_model: batch_size must be >= 1, got {batch_size}")
    rm = load_cached(str(path), device, batch_size)
    if inputs == "text":
        r = rm.score_responses(prompts, completions, normalize=normalize)
    else:
        if completion_ids is None:
            raise ValueError("reward_model: inputs: ids needs completion_ids (the policy's sampled token ids)")
        if policy_tokenizer is None:
            raise ValueError("reward_model: inputs: ids needs policy_tokenizer (the policy's model.tokenizer or "
                             "model.name_or_path) to check that the vocabularies match")
        check_same_vocabulary(rm, policy_tokenizer)
        r = score_ids(rm, prompts, completion_ids)
        r = rm.normalize(r) if normalize else r
    return [float(v) for v in r]


def score_ids(rm, prompts: Sequence, completion_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """Rewards of the RM-rendered prompts followed by the policy's own completion tokens (+ EOS
    when the completion did not end with it), as `encode_responses` would build them."""
    eos = rm.tokenizer.eos_token_id
    prompt_ids = rm.encode(prompts, [""] * len(prompts))  # rendered prompt + EOS
    seqs = []
    for p, ids in zip(prompt_ids, completion_ids):
        ids = list(ids)
        seq = p[:-1] + ids + ([] if ids and ids[-1] == eos else [eos])
        seqs.append(seq[-rm.spec.max_tokens:])
    return rm.score(seqs)


def judge(prompts: Sequence, completions_a: Sequence, completions_b: Sequence, *, path: str,
          device: str = "auto", batch_size: int = 32) -> list[float]:
    """P(a preferred over b) = sigmoid(r(x, a) - r(x, b)) under the Bradley–Terry model of the RM
    at `path`, one value per prompt: the judge of online preference methods (online DPO, XPO,
    Nash-MD), which make the pair with a probability > 0.5 (chosen a) or < 0.5 (chosen b)."""
    if not (len(prompts) == len(completions_a) == len(completions_b)):
        raise ValueError(f"judge: {len(prompts)} prompts, {len(completions_a)} completions a and "
                         f"{len(completions_b)} completions b; give one of each per prompt")
    rm = load_cached(str(path), device, batch_size)
    r = rm.score_responses(list(prompts) + list(prompts), list(completions_a) + list(completions_b))
    n = len(prompts)
    return [1.0 / (1.0 + math.exp(-float(d))) for d in (r[:n] - r[n:])]
