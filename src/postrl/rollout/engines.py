"""Rollout engines: turn prompt token ids into a `RolloutBatch` of sampled completions.

Every engine has one method, `generate(prompt_ids, params, seed) -> RolloutBatch`, plus
`sync_weights(model)` called after each learner update. `hf` (below) samples from the learner's
own model object, so it needs no weight transfer; GPU engines (vLLM) and Ray-hosted replicas
implement the same two methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from postrl.registry import Registry

ENGINES = Registry("rollout engine")
"""name -> factory(model, tokenizer, *, micro_batch_size) -> Engine."""


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    greedy: bool = False

    @classmethod
    def from_config(cls, rollout, *, greedy: bool = False, n: int | None = None,
                    max_new_tokens: int | None = None) -> "SamplingParams":
        return cls(n=n if n is not None else rollout.n, temperature=rollout.temperature,
                   top_p=rollout.top_p, top_k=rollout.top_k,
                   max_new_tokens=max_new_tokens or rollout.max_new_tokens, stop=list(rollout.stop),
                   greedy=greedy)


class Engine(Protocol):
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams, seed: int): ...

    def sync_weights(self, model) -> None: ...


@ENGINES.register("hf", paper="(HF transformers model, KV-cached sampling loop)",
                  summary="batched sampling on the learner's model with a KV cache (CPU or GPU)")
def hf_engine(model, tokenizer, *, micro_batch_size: int = 256):
    from postrl.rollout.hf_engine import HFEngine

    return HFEngine(model, tokenizer, micro_batch_size=micro_batch_size)
