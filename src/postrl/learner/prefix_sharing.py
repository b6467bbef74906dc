"""Shared-prefix forward: encode each distinct prompt once, attend all its completions to it.

"Prefix Grouper: Efficient GRPO Training through Shared-Prefix Forward" (arXiv 2506.05433)
observes that the G completions of a GRPO group share one prompt, so the prompt's hidden states
(and their backward) need computing once per group instead of G times. The paper packs
`prompt + G completions` into one row under a custom attention mask. This module builds the
equivalent with a KV cache instead, for three reasons: it runs on every HF causal LM and every
attention implementation (sdpa, eager, flash) without a custom mask; a completion only attends
to `P + T` keys rather than the `P + G*T` of a dense mask over the packed row (kernels do not
skip masked blocks, so long completions would pay for the whole row); and there is no
[L, L] mask to hold in memory. Two forwards:

1. the distinct prompts `[U, P]` (left-padded) with `use_cache=True`; the last position's logits
   predict each group's first completion token;
2. the completions `[B, T-1]` (the last token predicts nothing) on that cache, expanded to the
   rows with `batch_select_indices` (an index_select per layer, so autograd sums every row's
   key/value gradient back into the shared prompt), with positions continuing from each prompt's
   length and a 2-D mask `[B, P+T-1]`.

Values and gradients equal `completion_logprobs` (the tests check both to 1e-5). Identical
prompts are found by comparing the unpadded prompt tokens, never `group_ids`, so rows may come
in any order, split across micro-batches or as singletons (which cost a second forward and gain
nothing). Under gradient checkpointing transformers drops `past_key_values` inside each layer
in training mode, which would silently cut the completions off their prompt, so that case raises.
"""

from __future__ import annotations

import torch

from postrl.learner.logprobs import token_logprobs
from postrl.rollout.batch import RolloutBatch


def shared_prefix_logprobs(model, batch: RolloutBatch, *, temperature: float = 1.0, with_entropy: bool = False,
                           entropy_grad: bool = False, with_vocab_mean: bool = False) -> tuple:
    """log pi(y_t | x, y_<t) for every completion token: [B, T] (and entropy, vocabulary mean [B, T]).

    Same contract and values as `completion_logprobs`; padding positions hold 0.
    """
    if model.training and any(getattr(m, "gradient_checkpointing", False) for m in model.modules()):
        raise ValueError("prefix sharing needs the KV cache, which transformers drops under gradient "
                         "checkpointing in training mode; turn off model.gradient_checkpointing or prefix sharing")
    prompt_len = batch.prompt_mask.sum(-1)
    if bool((prompt_len == 0).any()):
        raise ValueError("prefix sharing needs at least one prompt token per row (it predicts the first "
                         "completion token)")
    first_rows, row_to_prompt = group_prompts(batch.prompt_ids, batch.prompt_mask)
    B, T = batch.completion_ids.shape
    P = int(prompt_len.max())  # drop the left-padding columns every prompt has
    T_keep = max(int(batch.completion_lengths().max()), 1)  # and the right-padding ones
    prompt_ids = batch.prompt_ids[first_rows, -P:]
    prompt_mask = batch.prompt_mask[first_rows, -P:]
    completion_ids = batch.completion_ids[:, :T_keep]

    # 1. each distinct prompt once; its last logit predicts completion token 0
    use_cache = T_keep > 1
    pos = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=pos, use_cache=use_cache,
                logits_to_keep=1)
    stats = [token_logprobs(out.logits[row_to_prompt], completion_ids[:, :1], temperature, with_entropy,
                            entropy_grad, with_vocab_mean)]

    # 2. every completion (minus its last token) on its prompt's cache; logit t predicts token t+1
    if use_cache:
        cache = out.past_key_values
        cache.batch_select_indices(row_to_prompt)
        completion_mask = batch.completion_mask[:, :T_keep - 1]
        # the plain forward's positions, `cumsum(mask) - 1` over the whole row, continued from the prompt
        pos = prompt_len[:, None] + completion_mask.cumsum(-1) - 1
        attn = torch.cat([prompt_mask[row_to_prompt], completion_mask], dim=1)
        out = model(input_ids=completion_ids[:, :-1], attention_mask=attn, position_ids=pos,
                    past_key_values=cache, use_cache=True)
        stats.append(token_logprobs(out.logits, completion_ids[:, 1:], temperature, with_entropy, entropy_grad,
                                    with_vocab_mean))

    # logp, entropy, vocab_mean: joined along time, padded back to T (columns that are padding in every row)
    joined = [None if parts[0] is None else torch.nn.functional.pad(torch.cat(parts, dim=1), (0, T - T_keep))
              for parts in zip(*stats)]
    return tuple(joined) if with_vocab_mean else tuple(joined[:2])


def group_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows with identical unpadded prompts: (first row of each distinct prompt [U], prompt of each row [B]).

    Prompts are left-padded flush right, so two rows hold the same prompt exactly when their
    tokens agree on real positions and their masks agree; pad ids (which may differ between
    batches that were concatenated) are replaced by -1 before comparing.
    """
    keyed = torch.where(prompt_mask.bool(), prompt_ids, -1)
    _, row_to_prompt = torch.unique(keyed, dim=0, return_inverse=True)
    rows = torch.arange(len(row_to_prompt), device=prompt_ids.device)
    U = int(row_to_prompt.max()) + 1 if len(row_to_prompt) else 0
    first_rows = torch.full((U,), len(row_to_prompt), dtype=torch.long, device=prompt_ids.device)
    first_rows = first_rows.scatter_reduce(0, row_to_prompt, rows, reduce="amin")
    return first_rows, row_to_prompt

