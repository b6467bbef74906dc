"""The `hf` engine: a lean KV-cached sampling loop on any HF causal LM.

The prompt is encoded once (prefill), then one token per step is fed with the cache. Three
things keep the loop cheap:

- a static KV cache (transformers' `StaticCache`) allocated once for prompt + max_new_tokens,
  written in place, instead of `DynamicCache`'s `torch.cat` per layer per token. A model whose
  cache is not plain keys/values (or that does not declare static-cache support) falls back to
  the dynamic cache; `cache_fallback` says why;
- finished rows are dropped: once `compact_fraction` of the active rows have hit EOS or a stop
  string, the cache, masks and positions are indexed down to the live rows;
- the only per-token Python work is sampling and the stop check (stop strings only when set);
- the n completions of a prompt share its prefill: each distinct prompt of a chunk is encoded
  once and its cache rows are copied n times (`share_prefill`), so a long prompt costs one
  forward, not n.

Sampling is batch-invariant (see `sampling.py`): row (prompt i, sample j) draws from its own
stream keyed by `(seed, first_index + i, j)`, so its tokens do not depend on the micro-batch
size, on dropping finished rows, or on how prompts are sharded across workers. Behaviour
log-probs are those of the temperature-scaled distribution before top-p/top-k truncation, the
quantity the learner computes, so an on-policy ratio is exactly 1 up to numerics. Memory is
bounded by generating `micro_batch_size` sequences at a time.

`generate(..., entropy=True)` also returns, per row, the entropy of each sampled token's
distribution (`metadata["token_entropy"]`, the same temperature-scaled distribution before
truncation; one extra reduction over the vocabulary per step): ARPO's branching signal.
"""

from __future__ import annotations

import warnings

import torch
from transformers import DynamicCache, StaticCache
from transformers.cache_utils import DynamicLayer, StaticLayer

from postrl.rollout.batch import RolloutBatch, pad_rows
from postrl.rollout.engines import SamplingParams
from postrl.rollout.sampling import row_uniforms, sample_tokens


class HFEngine:
    def __init__(self, model, tokenizer, *, micro_batch_size: int = 256, compile: bool = False,
                 compact_fraction: float = 0.25, share_prefill: bool = True):
        """`compact_fraction`: drop finished rows once at least this share of the active rows has
        finished (0 drops at every finish, above 1 never). `share_prefill`: encode each distinct
        prompt once. Results depend on neither (up to float rounding)."""
        self.tokenizer = tokenizer
        self.micro_batch_size = micro_batch_size
        self.compile = compile
        self.compact_fraction = compact_fraction
        self.share_prefill = share_prefill
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
            raise ValueError("neither the model's generation_config nor the tokenizer has an EOS token, so "
                             "generation could never stop; use a tokenizer with eos_token set (model.tokenizer) "
                             "or set eos_token_id in the model's generation_config.json")
        self.eos_ids = torch.tensor(eos_ids, dtype=torch.long)
        self.sync_weights(model)

    def sync_weights(self, model) -> None:
        """Same process, same tensors: nothing to copy; only a new model object needs a new setup."""
        if getattr(self, "model", None) is model:
            return
        self.model = model
        self.cache_fallback = _static_cache_problem(model)
        if self.cache_fallback:
            warnings.warn(f"hf engine: using the dynamic KV cache because {self.cache_fallback}")
        self._decode = model
        if self.compile:
            if self.cache_fallback:  # a growing cache changes shape every step: a recompile per token
                warnings.warn("hf engine: compile=True ignored, it needs the static KV cache")
            else:
                # dynamic=None: the first shape is compiled static, a second one (a smaller batch
                # after dropping finished rows, a longer cache) recompiles once with dynamic sizes.
                self._decode = torch.compile(model, dynamic=None)

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams, seed: int = 0, *,
                 first_index: int = 0, entropy: bool = False) -> RolloutBatch:
        """n completions for each prompt; completions of prompt i get group id i.

        `first_index` is the global index of `prompt_ids[0]`: it keys the random streams, so a pool
        that calls each worker with its shard's offset gets, concatenated, the result of one call.
        `entropy` (or `params.entropy`): also fill `metadata["token_entropy"]` (per row, one float
        per completion token).
        """
        entropy = entropy or params.entropy
        expanded = [p for p in prompt_ids for _ in range(params.n)]
        keys = [(first_index + i, j) for i in range(len(prompt_ids)) for j in range(params.n)]
        group_ids = [i for i in range(len(prompt_ids)) for _ in range(params.n)]
        chunks = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(expanded), self.micro_batch_size):
                end = start + self.micro_batch_size
                chunks.append(self._generate_chunk(expanded[start:end], keys[start:end], params, seed, entropy))
        finally:
            self.model.train(was_training)
        batch = RolloutBatch.concat(chunks)
        batch.group_ids = torch.tensor(group_ids, dtype=torch.long)
        return batch

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _generate_chunk(self, prompts: list[list[int]], keys: list[tuple[int, int]], params: SamplingParams,
                        seed: int, entropy: bool = False) -> RolloutBatch:
        device, T = self._device, params.max_new_tokens
        prompt_ids, prompt_mask = pad_rows(prompts, self.pad_id, left=True)
        B, P = prompt_ids.shape
        # Cache slot P + t holds completion token t for every row (prompts are left-padded), so
        # the padding mask is fixed up front: ones on generated slots, whose future part the
        # causal mask hides. The dynamic cache wants it cut to the slots written so far.
        attn = torch.cat([prompt_mask, torch.ones((B, T), dtype=torch.long)], dim=1).to(device)
        pos = (prompt_mask.cumsum(-1) - 1).clamp(min=0).to(device)
        u = (torch.zeros(B, T) if params.greedy else row_uniforms(seed, keys, T)).to(device)
        static = self.cache_fallback is None
        if static:
            cache = StaticCache(config=self.model.config, max_cache_len=P + T)
        else:
            cache = DynamicCache(config=self.model.config)
        first, copy_of = self._distinct(prompts, cache)
        out = self.model(input_ids=prompt_ids[first].to(device),
                         attention_mask=(attn if static else attn[:, :P])[first.to(device)],
                         position_ids=pos[first.to(device)], past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1]
        if len(first) < B:  # every row gets its prompt's cache rows and next-token logits
            copy_of = copy_of.to(device)
            _select_cache_rows(cache, copy_of)
            logits = logits.index_select(0, copy_of)
        next_pos = pos[:, -1:] + 1

        # Outputs are indexed by chunk row; `rows` maps active rows (the batch being decoded) to them.
        completion_ids = torch.full((B, T), self.pad_id, dtype=torch.long, device=device)
        behavior = torch.zeros((B, T), dtype=torch.float32, device=device)
        entropies = torch.zeros((B, T), dtype=torch.float32, device=device) if entropy else None
        lengths = torch.zeros(B, dtype=torch.long, device=device)
        stopped = torch.zeros(B, dtype=torch.bool, device=device)
        rows = torch.arange(B, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)  # per active row
        eos_ids = self.eos_ids.to(device)
        stop_tail = max((len(s) for s in params.stop), default=0)
        steps = 0
        for t in range(T):
            token, logp = sample_tokens(logits, u[:, t], temperature=params.temperature, top_k=params.top_k,
                                        top_p=params.top_p, greedy=params.greedy)
            token = torch.where(done, self.pad_id, token)
            completion_ids[rows, t] = token
            behavior[rows, t] = torch.where(done, 0.0, logp)
            if entropies is not None:
                entropies[rows, t] = torch.where(done, 0.0, token_entropy(logits, params))
            lengths[rows] += (~done).long()  # a row's length includes the token that finishes it
            hit = torch.isin(token, eos_ids) & ~done
            if stop_tail:
                tail = completion_ids[rows, max(0, t + 1 - stop_tail):t + 1]
                hit |= self._stop_hits(tail, done, params.stop)
            stopped[rows] |= hit
            done |= hit
            steps = t + 1
            n_done = int(done.sum())  # the one host sync per step
            if steps == T or n_done == len(done):
                break
            if n_done and n_done >= self.compact_fraction * len(done) and _can_drop_rows(cache):
                keep = (~done).nonzero().squeeze(-1)
                _select_cache_rows(cache, keep)
                rows, token, next_pos, attn, u = rows[keep], token[keep], next_pos[keep], attn[keep], u[keep]
                done = done[keep]
            out = self._decode(input_ids=token[:, None], attention_mask=attn if static else attn[:, :P + t + 1],
                               position_ids=next_pos, past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1]
            next_pos = next_pos + 1

        completion_mask = (torch.arange(steps, device=device)[None, :] < lengths[:, None]).long()
        finish = ["stop" if s else "length" for s in stopped.tolist()]
        metadata = {"finish_reason": finish}
        if entropies is not None:
            metadata["token_entropy"] = [row[:n] for row, n in zip(entropies.cpu().tolist(), lengths.tolist())]
        return RolloutBatch(
            prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids[:, :steps].cpu(),
            completion_mask=completion_mask.cpu(), loss_mask=completion_mask.float().cpu(),
            behavior_logprobs=behavior[:, :steps].cpu(), group_ids=torch.zeros(B, dtype=torch.long),
            metadata=metadata,
        )

    def _distinct(self, prompts: list[list[int]], cache) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows to prefill (the first of each distinct prompt) and, per row, its prefilled row."""
        rows = torch.arange(len(prompts))
        if not self.share_prefill or not _can_drop_rows(cache):
            return rows, rows
        slot: dict[tuple[int, ...], int] = {}
        first, copy_of = [], []
        for i, p in enumerate(prompts):
            key = tuple(p)
            if key not in slot:
                slot[key] = len(first)
                first.append(i)
            copy_of.append(slot[key])
        return torch.tensor(first, dtype=torch.long), torch.tensor(copy_of, dtype=torch.long)

    def _stop_hits(self, tail: torch.Tensor, done: torch.Tensor, stops: list[str]) -> torch.Tensor:
        """Rows whose decoded tail now ends with a stop string (per-row Python: only with stops)."""
        hits = torch.zeros_like(done)
        for i, row in enumerate(tail.tolist()):
            if done[i]:
                continue
            text = self.tokenizer.decode(row, skip_special_tokens=False)
            if any(text.endswith(s) for s in stops):
                hits[i] = True
        return hits


def token_entropy(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """H = -sum_v p(v) log p(v) [B] of the distribution the behaviour log-probs come from: the
    temperature-scaled softmax before top-k/top-p (untempered for greedy), as in `sample_tokens`."""
    logits = logits.float() if params.greedy else logits.float() / params.temperature
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).nan_to_num().sum(-1)  # 0 * -inf (masked vocab entries) counts as 0


def _static_cache_problem(model) -> str | None:
    """Why `model` cannot decode with a preallocated cache whose rows we can drop, or None."""
    name = type(model).__name__
    # transformers' own flag for "runs with a StaticCache under torch.compile(fullgraph=True)"
    if not getattr(model, "_can_compile_fullgraph", False):
        return f"{name} does not declare static-cache support (_can_compile_fullgraph is False)"
    try:
        cache = StaticCache(config=model.config, max_cache_len=1)
    except Exception as e:  # noqa: BLE001 - any failure means the same thing: use the dynamic cache
        return f"transformers cannot build a StaticCache for {name} ({type(e).__name__}: {e})"
    other = sorted({type(layer).__name__ for layer in cache.layers if not isinstance(layer, StaticLayer)})
    if other:
        return f"{name}'s cache has layers that hold more than keys and values ({', '.join(other)})"
    return None


def _can_drop_rows(cache) -> bool:
    """Only plain key/value layers can be indexed by row (recurrent states may not be)."""
    return all(isinstance(layer, (StaticLayer, DynamicLayer)) for layer in cache.layers)


def _select_cache_rows(cache, keep: torch.Tensor) -> None:
    """Keep rows `keep` of every layer's keys and values (a copy: the old tensors are freed)."""
    for layer in cache.layers:
        if isinstance(layer, StaticLayer):
            layer.keys = layer.keys.index_select(0, keep)
            layer.values = layer.values.index_select(0, keep)
            layer.batch_size = len(keep)
        else:
            layer.batch_select_indices(keep)
