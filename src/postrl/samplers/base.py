"""The sampler protocol and registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from postrl.registry import Registry

SAMPLERS = Registry("sampler")
"""name -> class(dataset_size, seed, **hparams). needs: "rows" (the constructor also gets
`rows=`, the training split's dataset rows, e.g. to read a reference-answer column or the
prompt text), "tokenizer" (`tokenizer=`, the policy's tokenizer), "token_entropy" (the rollout
engine also returns each sampled token's entropy, `batch.metadata["token_entropy"]`, one list of
floats per row; the hf engine only: `SamplingParams.entropy`), "generate" (`generate=`, the policy as
a text generator: `generate(texts, seed, greedy, max_new_tokens=None, temperature=None) -> list[str]`
renders each text as a user prompt, samples one completion per text with the current policy's rollout
engine and decodes it; trainers/policy_text.py; synchronous rollouts only)."""


def build_sampler(name: str, kwargs: dict[str, Any], dataset_size: int, seed: int, *, rows=None, tokenizer=None,
                  generate=None):
    """The configured sampler, given what its registry entry needs beyond its hyper-parameters."""
    entry = SAMPLERS.get(name)
    extra = {}
    if "rows" in entry.needs:
        extra["rows"] = rows
    if "tokenizer" in entry.needs:
        extra["tokenizer"] = tokenizer
    if "generate" in entry.needs:
        extra["generate"] = generate
    return entry.fn(dataset_size, seed, **kwargs, **extra)


@dataclass(frozen=True)
class Addition:
    """What a sampler adds to one row's prompt for one rollout (`Sampler.decorate`, `Sampler.rescue`)."""

    hint: str = ""
    """Text appended to the prompt (a chat prompt: to its last user message) before tokenising."""
    answer_prefix: str = ""
    """Text the answer starts with: its tokens follow the templated prompt and the model continues
    from there. It is part of the prompt (never trained on); rewards score prefix + completion."""
    tag: str = ""
    """A short label of the sampler's decision (e.g. "ratio_0.5"), logged as `hints/<sampler>/<tag>`."""
    prompt: str = ""
    """When non-empty, it replaces the row's prompt text (a chat prompt: the content of its last user
    message) before the hint and answer prefix are applied. The rewards keep the row's columns (its
    `answer`), so a restructured problem is judged against the original's answer (CLPO)."""

    @property
    def empty(self) -> bool:
        return not (self.hint or self.answer_prefix or self.prompt)


class Sampler:
    """Base of the sampler classes: choose rows, receive feedback, save and restore state.

    A sampler may also filter the groups it gets back: with `filters_groups = True` the trainer
    asks `keep(rewards_G)` after scoring, drops the groups it rejects and refills the batch by
    drawing `next(k)` again and generating, for at most `max_rounds` generation rounds per step
    (the first included). Refill draws happen inside the step, so `state_dict` covers them. A refill
    draw may return fewer than k rows; an empty one ends the step's refilling (CLPO: no rewrites left).

    A sampler may add to the prompts (trainers/hints.py builds them; synchronous rollouts only):
    with `decorates = True` the trainer calls `decorate(indices)` right after every `next(k)`
    (the step's draw and refill draws) and prompts row `indices[j]` with addition j (a hint, an answer
    prefix, or a replacement prompt text); with
    `rescues = True` it calls `rescue(indices, rewards_G)` after scoring, generates one completion
    per planned addition and lets `rescued(rewards)` choose the one that replaces a rollout of the
    group. Additions must be a pure function of the checkpointed state, so resume stays exact.

    A sampler may act on the scored batch (trainers/rl.py, right after the advantages): with
    `selects = True` the trainer calls `select(batch, advantages, progress)` and trains on what it
    returns (D3S drops rows and masks tokens, PC-GRPO re-weights groups); with `drops_rows` the
    number of rows per step varies. A sampler may split the rollout budget unevenly (XRPO): with
    `allocates = True` the step samples `first_n(rollout.n)` completions per prompt, then
    (trainers/groups.py) `allocate(indices, rewards_G, budget)` says how many more each prompt
    gets; groups then differ in size.
    """

    filters_groups: bool = False
    """True when `keep` can reject groups (the trainer then refills; synchronous rollouts only)."""
    max_rounds: int = 1
    """Generation rounds per step, the first included, when `filters_groups` is True."""
    decorates: bool = False
    """True when `decorate` can return non-empty additions (plain samplers cost the trainer nothing)."""
    rescues: bool = False
    """True when `rescue` can plan hinted retries of scored groups."""
    selects: bool = False
    """True when `select` can change the scored batch or its advantages (the plain loop skips the call)."""
    drops_rows: bool = False
    """True when `select` can drop rows (the rows per step then vary)."""
    allocates: bool = False
    """True when `first_n` / `allocate` split the rollout budget unevenly (groups differ in size)."""

    def __init__(self, dataset_size: int, seed: int = 0):
        if dataset_size < 1:
            raise ValueError("the prompt dataset is empty; check data.source / data.split")
        self.dataset_size = dataset_size
        self.seed = seed

    def next(self, k: int) -> list[int]:
        raise NotImplementedError

    def keep(self, rewards_G: list[list[float]]) -> list[bool]:
        """For each scored group (its completions' rewards), whether to train on it. Default: all."""
        return [True] * len(rewards_G)

    def decorate(self, indices: list[int]) -> list[Addition]:
        """The addition to each row of the draw `indices` (the last `next` result). Default: none."""
        return [Addition() for _ in indices]

    def rescue(self, indices: list[int], rewards_G: list[list[float]]) -> list[list[Addition]]:
        """For each scored group, the additions to try one completion with ([]: none). Default: none."""
        return [[] for _ in indices]

    def rescued(self, rewards: list[float]) -> int | None:
        """Which tried addition's completion (by position; rewards of the tries in plan order)
        replaces a rollout of its group, or None. Default: none."""
        return None

    def select(self, batch, advantages, progress: float):
        """(batch, advantages [B, T], metrics) to train on, from the step's scored batch and its
        advantages; `progress` = step / train.steps. Default: unchanged."""
        return batch, advantages, {}

    def first_n(self, n: int) -> int:
        """Completions per prompt in the step's first rollout, of the average budget n. Default: n."""
        return n

    def allocate(self, indices: list[int], rewards_G: list[list[float]], budget: int) -> list[int]:
        """How many more completions each scored group gets, summing to at most `budget`. Default: none."""
        return [0] * len(indices)

    @classmethod
    def check_rollouts(cls, n: int, kwargs: dict[str, Any]) -> None:
        """Refuse hyper-parameters `kwargs` that cannot work with rollout.n = n. Default: all can."""

    def update(self, indices: list[int], rewards: list[list[float]]) -> None:
        """Feedback: for each chosen row, the rewards of its completions (groups may differ in
        size when the sampler allocates). Default: ignore."""

    def metrics(self) -> dict[str, float]:
        """What the sampler reports after `update` (logged as `sampler/<key>`). Default: nothing."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
