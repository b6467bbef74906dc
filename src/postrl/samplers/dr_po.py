"""DR-PO dataset resets: rollouts that start from a prefix of the row's offline (reference) answer."""

from __future__ import annotations

import random
from typing import Any

from postrl.samplers.base import SAMPLERS, Addition
from postrl.samplers.columns import text_column
from postrl.samplers.uniform import Uniform


@SAMPLERS.register("dr_po", paper="Dataset Reset Policy Optimization for RLHF", arxiv="2404.08495",
                   summary="with probability reset_prob a prompt's rollouts continue a uniformly random-length "
                           "token prefix of its offline answer", needs=("rows", "tokenizer"))
class DatasetReset(Uniform):
    """Dataset Reset Policy Optimization (Chang et al., 2024): reset the generator to states of the
    offline data instead of always starting from the prompt.

    For each drawn row with offline answer y* (column `column`, tokenised without special tokens,
    L = |y*| tokens), independently:
        with probability reset_prob and L >= 2:   j ~ Uniform{1, ..., L-1},
                                                  answer_prefix = decode(y*[:j])
        otherwise:                                no addition (a normal rollout)
    The rollout continues after the prefix; the prefix tokens are part of the prompt, so they are
    never trained on (the authors' code masks the roll-in out of the PPO loss), and the rewards score
    prefix + completion (their reward model scores the whole response). j < L always leaves at least
    one token to generate (their `RollinProcessor` samples roll-in lengths 1..L-1 and never resets
    a reference shorter than 2 tokens).

    Deviation: the reset is drawn per prompt, so the rollout.n completions of a group continue the
    same state and their group baseline compares continuations of it; the paper's PPO setting has
    one sample per prompt. The prefix is passed as text and re-tokenised by the trainer, which
    reproduces y*[:j] exactly for character tokenizers (BPE merges at the cut may differ).
    Draws: random.Random seeded by (seed, decorate calls so far), a counter in `state_dict`, so
    resume is exact; prompts are drawn like `uniform`. Default reset_prob = 1.0 is the authors'
    `beta` (scripts for TL;DR); the HH setting could not be confirmed.
    """

    decorates = True

    def __init__(self, dataset_size: int, seed: int = 0, *, reset_prob: float = 1.0, column: str = "answer",
                 shuffle: bool = True, rows: list, tokenizer):
        super().__init__(dataset_size, seed, shuffle=shuffle)
        if not 0.0 <= reset_prob <= 1.0:
            raise ValueError(f"dr_po: sampler.kwargs.reset_prob must be in [0, 1], got {reset_prob}")
        if tokenizer is None:
            raise ValueError("dr_po: needs the policy tokenizer (its registry entry declares needs=('tokenizer',))")
        self.reset_prob, self.decode = reset_prob, tokenizer.decode
        self.refs = [tokenizer.encode(t, add_special_tokens=False) for t in text_column(rows, column, "dr_po")]
        self.calls = 0

    def decorate(self, indices: list[int]) -> list[Addition]:
        rng = random.Random(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        out = []
        for i in indices:
            ref = self.refs[i]
            if rng.random() < self.reset_prob and len(ref) >= 2:
                out.append(Addition(answer_prefix=self.decode(ref[:rng.randint(1, len(ref) - 1)]), tag="reset"))
            else:
                out.append(Addition())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "calls": self.calls}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.calls = int(state["calls"])
