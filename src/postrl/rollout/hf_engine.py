"""The `hf` engine: a lean KV-cached sampling loop on any HF causal LM.

The prompt is encoded once (prefill), then one token per step is fed with the cache; the only
per-token Python work is sampling and the stop check. Behaviour log-probs are those of the
temperature-scaled distribution before top-p/top-k truncation, the same quantity the learner
computes, so an on-policy ratio is exactly 1 up to numerics. Memory is bounded by generating
`micro_batch_size` sequences at a time.
"""

from __future__ import annotations

import torch

from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams


class HFEngine:
    def __init__(self, model, tokenizer, *, micro_batch_size: int = 256):
        self.model = model
        self.tokenizer = tokenizer
        self.micro_batch_size = micro_batch_size
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set one (e.g. tokenizer.pad_token = "
                             "tokenizer.eos_token) before generating")
        self.pad_id = tokenizer.pad_token_id
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = eos if eos is not None else tokenizer.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        if tokenizer.eos_token_id is not None:
            eos_ids = sorted(set(eos_ids) | {tokenizer.eos_token_id})
        if not eos_ids or eos_ids == [None]:
            raise ValueError("neither the model's generation_config nor the tokenizer has an EOS token")
        self.eos_ids = torch.tensor(eos_ids, dtype=torch.long)

    def sync_weights(self, model) -> None:
        self.model = model  # same process, same tensors: nothing to copy

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams, seed: int = 0) -> RolloutBatch:
        """n completions for each prompt; completions of prompt i get group id i."""
        expanded = [p for p in prompt_ids for _ in range(params.n)]
        group_ids = [i for i in range(len(prompt_ids)) for _ in range(params.n)]
        gen = torch.Generator(device=self._device).manual_seed(int(seed))
        chunks = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(expanded), self.micro_batch_size):
                part = expanded[start:start + self.micro_batch_size]
                chunks.append(self._generate_chunk(part, params, gen))
        finally:
            self.model.train(was_training)
        batch = RolloutBatch.concat(chunks)
        batch.group_ids = torch.tensor(group_ids, dtype=torch.long)
        return batch

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _generate_chunk(self, prompts: list[list[int]], params: SamplingParams, gen) -> RolloutBatch:
        device = self._device
        B, P = len(prompts), max(len(p) for p in prompts)
        prompt_ids = torch.full((B, P), self.pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((B, P), dtype=torch.long)
        for i, p in enumerate(prompts):
            prompt_ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
            prompt_mask[i, P - len(p):] = 1
        ids, attn = prompt_ids.to(device), prompt_mask.to(device)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        eos_ids = self.eos_ids.to(device)

        out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True,
                         logits_to_keep=1)
        cache, logits = out.past_key_values, out.logits[:, -1]
        next_pos = pos[:, -1:] + 1
        done = torch.zeros(B, dtype=torch.bool, device=device)
        stopped = torch.zeros(B, dtype=torch.bool, device=device)
        lengths = torch.zeros(B, dtype=torch.long, device=device)
        tokens, logps = [], []
        stop_tail = max((len(s) for s in params.stop), default=0)
        for t in range(params.max_new_tokens):
            token, logp = _sample(logits, params, gen)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            tokens.append(token)
            logps.append(torch.where(done, torch.zeros_like(logp), logp))
            lengths += (~done).long()  # a row's length includes the token that finishes it
            hit = torch.isin(token, eos_ids) & ~done
            if stop_tail:
                hit |= self._stop_hits(tokens, done, params.stop, stop_tail)
            stopped |= hit
            done |= hit
            if t + 1 == params.max_new_tokens or bool(done.all()):
                break
            attn = torch.cat([attn, torch.ones((B, 1), dtype=attn.dtype, device=device)], dim=1)
            out = self.model(input_ids=token[:, None], attention_mask=attn, position_ids=next_pos,
                             past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1]
            next_pos = next_pos + 1

        completion_ids = torch.stack(tokens, dim=1).cpu()
        behavior = torch.stack(logps, dim=1).float().cpu()
        positions = torch.arange(completion_ids.shape[1])[None, :]
        completion_mask = (positions < lengths.cpu()[:, None]).long()
        completion_ids = torch.where(completion_mask.bool(), completion_ids, self.pad_id)
        behavior = behavior * completion_mask
        finish = ["stop" if s else "length" for s in stopped.cpu().tolist()]
        return RolloutBatch(
            prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
            completion_mask=completion_mask, loss_mask=completion_mask.float(),
            behavior_logprobs=behavior, group_ids=torch.zeros(B, dtype=torch.long),
            metadata={"finish_reason": finish},
        )

    def _stop_hits(self, tokens, done, stops, tail_chars) -> torch.Tensor:
        """Rows whose decoded tail now ends with a stop string (per-row Python: only with stops)."""
        hits = torch.zeros_like(done)
        recent = torch.stack(tokens[-tail_chars:], dim=1).cpu().tolist()
        for i, row in enumerate(recent):
            if done[i]:
                continue
            text = self.tokenizer.decode(row, skip_special_tokens=False)
            if any(text.endswith(s) for s in stops):
                hits[i] = True
        return hits


def _sample(logits: torch.Tensor, params: SamplingParams, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token and its log-prob under the temperature-scaled (untruncated) distribution."""
    logits = logits.float()
    if params.greedy:
        logprobs = torch.log_softmax(logits, dim=-1)
        token = logprobs.argmax(-1)
        return token, logprobs.gather(-1, token[:, None]).squeeze(-1)
    logits = logits / params.temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    filtered = logits
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(filtered, params.top_k, dim=-1).values[:, -1:]
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(filtered, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= params.top_p  # keep the token crossing p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        filtered = torch.full_like(filtered, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(filtered, dim=-1)
    token = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    return token, logprobs.gather(-1, token[:, None]).squeeze(-1)
