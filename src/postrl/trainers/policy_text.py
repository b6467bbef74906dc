"""The policy as a text generator for samplers that need "generate" (CLPO's self-rewriting).

`policy_text(cfg, tokenizer, rollouts)` returns

    generate(texts, seed, greedy, max_new_tokens=None, temperature=None) -> list[str]

Each text becomes one user turn, rendered the way the training prompts are (`data.chat_template`,
`data.system_prompt`: a dataset of plain-text prompts gets plain text, a chat dataset one user
message), and the current policy samples one completion per text through the step's rollout engine
(`Rollouts.generate`: the weights that sample the step; synchronous rollouts only). Sampling uses the
rollout section's top_p / top_k, no stop strings (a rewrite may span lines), `max_new_tokens`
(default rollout.max_new_tokens) and `temperature` (default rollout.temperature); `greedy` samples
the arg-max. Completions are decoded without special tokens. The result depends only on the texts,
the seed and the weights, so a sampler that seeds it from its checkpointed state resumes exactly.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from postrl.data.chat import render_prompt
from postrl.rollout.engines import SamplingParams


def policy_text(cfg, tokenizer, rollouts, rows) -> Callable[..., list[str]]:
    """The generate callable over `rollouts`, rendering texts like the training `rows`' prompts."""
    plain = bool(rows) and isinstance(rows[0].prompt, str)

    def generate(texts: list[str], seed: int, greedy: bool, max_new_tokens: int | None = None,
                 temperature: float | None = None) -> list[str]:
        if not texts:
            return []
        prompts = [text if plain else [{"role": "user", "content": text}] for text in texts]
        if not plain and cfg.data.system_prompt:
            prompts = [[{"role": "system", "content": cfg.data.system_prompt}] + m for m in prompts]
        rendered = [render_prompt(tokenizer, prompt, cfg.data) for prompt in prompts]
        ids = [list(row) for row in tokenizer(rendered, add_special_tokens=False)["input_ids"]]
        params = replace(SamplingParams.from_config(cfg.rollout, greedy=greedy, n=1, max_new_tokens=max_new_tokens),
                         stop=[])
        if temperature is not None:
            params = replace(params, temperature=temperature)
        batch = rollouts.generate(ids, params, seed % 2**62)
        out = [""] * len(texts)
        for r, g in enumerate(batch.group_ids.tolist()):
            out[g] = tokenizer.decode(batch.completion_ids[r][batch.completion_mask[r].bool()].tolist(),
                                      skip_special_tokens=True)
        return out

    return generate
