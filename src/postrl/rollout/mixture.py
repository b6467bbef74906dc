"""Sampling from the geometric mixture of two models, token by token (Nash-MD's opponent).

At every step the next-token distribution is

    pi_mix(y_t | s) ∝ pi(y_t | s)^(1 - m) * pi_ref(y_t | s)^m,    m = mixture_coef in [0, 1]

i.e. mixed logits (1 - m) log pi + m log pi_ref (the per-step normalisers only shift the logits),
then the usual temperature / top-k / top-p of `SamplingParams`. m = 0 samples the policy, m = 1
the reference. Each model keeps its own KV cache and both see the same sampled prefix. Draws use
the per-row streams of `sampling.py`, keyed by (seed, first_index + prompt, sample), so a row's
tokens do not depend on batching. Behaviour log-probs are log pi_mix (temperature-scaled, before
truncation). The loop is the plain one: a dynamic cache per model and finished rows kept (padded)
until the chunk ends, which costs at most max_new_tokens steps per chunk: this engine samples
opponents, a small share of an online step.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from postrl.rollout.batch import RolloutBatch, pad_rows
from postrl.rollout.engines import SamplingParams
from postrl.rollout.sampling import row_uniforms, sample_tokens


class MixtureEngine:
    """`generate(prompt_ids, params, seed, *, first_index) -> RolloutBatch` like the hf engine."""

    def __init__(self, policy, ref, tokenizer, *, mixture_coef: float, micro_batch_size: int = 64):
        if not 0.0 <= mixture_coef <= 1.0:
            raise ValueError(f"mixture_coef must be in [0, 1] (0 = the policy, 1 = the reference), got {mixture_coef}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set one (e.g. tokenizer.pad_token = "
                             "tokenizer.eos_token) before generating")
        self.policy, self.ref, self.tokenizer = policy, ref, tokenizer
        self.mixture_coef = mixture_coef
        self.micro_batch_size = micro_batch_size
        self.pad_id = tokenizer.pad_token_id
        eos = policy.generation_config.eos_token_id if policy.generation_config is not None else None
        eos = eos if isinstance(eos, list) else ([] if eos is None else [eos])
        eos_ids = sorted(set(eos) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()))
        if not eos_ids:
            raise ValueError("neither the policy's generation_config nor the tokenizer has an EOS token")
        self.eos_ids = torch.tensor(eos_ids, dtype=torch.long)

    def sync_weights(self, model) -> None:
        """The policy is sampled in place; a new model object replaces it."""
        self.policy = model

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams, seed: int = 0, *,
                 first_index: int = 0) -> RolloutBatch:
        """n mixture completions per prompt; completions of prompt i get group id i."""
        expanded = [p for p in prompt_ids for _ in range(params.n)]
        keys = [(first_index + i, j) for i in range(len(prompt_ids)) for j in range(params.n)]
        completions: list[list[int]] = []
        behavior: list[list[float]] = []
        finish: list[str] = []
        modes = (self.policy.training, self.ref.training)
        self.policy.eval()
        self.ref.eval()
        try:
            for start in range(0, len(expanded), self.micro_batch_size):
                end = start + self.micro_batch_size
                c, b, f = self._chunk(expanded[start:end], keys[start:end], params, seed)
                completions += c
                behavior += b
                finish += f
        finally:
            self.policy.train(modes[0])
            self.ref.train(modes[1])
        groups = [i for i in range(len(prompt_ids)) for _ in range(params.n)]
        return RolloutBatch.from_token_lists(expanded, completions, self.pad_id, behavior=behavior,
                                             group_ids=groups, metadata={"finish_reason": finish})

    def _chunk(self, prompts: list[list[int]], keys: list[tuple[int, int]], params: SamplingParams, seed: int):
        device, T = next(self.policy.parameters()).device, params.max_new_tokens
        ids, mask = pad_rows(prompts, self.pad_id, left=True)
        ids, mask = ids.to(device), mask.to(device)
        B, P = ids.shape
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        u = (torch.zeros(B, T) if params.greedy else row_uniforms(seed, keys, T)).to(device)
        caches = [DynamicCache(), DynamicCache()]
        logits = self._mixed_logits(ids, mask, pos, caches)
        next_pos = pos[:, -1:] + 1
        tokens = torch.full((B, T), self.pad_id, dtype=torch.long, device=device)
        logps = torch.zeros((B, T), device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        stopped = torch.zeros(B, dtype=torch.bool, device=device)
        lengths = torch.zeros(B, dtype=torch.long, device=device)
        eos_ids = self.eos_ids.to(device)
        stop_tail = max((len(s) for s in params.stop), default=0)
        for t in range(T):
            token, logp = sample_tokens(logits, u[:, t], temperature=params.temperature, top_k=params.top_k,
                                        top_p=params.top_p, greedy=params.greedy)
            token = torch.where(done, self.pad_id, token)
            tokens[:, t], logps[:, t] = token, torch.where(done, 0.0, logp)
            lengths += (~done).long()  # a row's length includes the token that finishes it
            hit = torch.isin(token, eos_ids) & ~done
            if stop_tail:
                hit |= self._stop_hits(tokens[:, max(0, t + 1 - stop_tail):t + 1], done, params.stop)
            stopped |= hit
            done |= hit
            if t + 1 == T or bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
            logits = self._mixed_logits(token[:, None], mask, next_pos, caches)
            next_pos = next_pos + 1
        n = lengths.tolist()
        completions = [tokens[i, :n[i]].tolist() for i in range(B)]
        behavior = [logps[i, :n[i]].tolist() for i in range(B)]
        return completions, behavior, ["stop" if s else "length" for s in stopped.tolist()]

    def _mixed_logits(self, ids, mask, pos, caches) -> torch.Tensor:
        """(1 - m) log pi + m log pi_ref at the last position [B, V], advancing both caches."""
        outs = [model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                      use_cache=True).logits[:, -1].float()
                for model, cache in zip((self.policy, self.ref), caches)]
        if outs[0].shape[-1] != outs[1].shape[-1]:
            raise ValueError(f"the policy and the reference have different vocabularies ({outs[0].shape[-1]} vs "
                             f"{outs[1].shape[-1]} logits); the mixture needs one tokenizer for both")
        m = self.mixture_coef
        return (1.0 - m) * torch.log_softmax(outs[0], -1) + m * torch.log_softmax(outs[1], -1)

    def _stop_hits(self, tail: torch.Tensor, done: torch.Tensor, stops: list[str]) -> torch.Tensor:
        """Rows whose decoded tail now ends with a stop string (per-row Python: only with stops)."""
        hits = torch.zeros_like(done)
        for i, row in enumerate(tail.tolist()):
            if not done[i]:
                text = self.tokenizer.decode(row, skip_special_tokens=False)
                hits[i] = any(text.endswith(s) for s in stops)
        return hits
