"""Sequence packing: the learner forward without padding tokens.

A padded `RolloutBatch` row costs `P + T` positions however short its prompt and completion;
with varied lengths most of the batch can be padding. Here each row's real tokens (the prompt
without its left padding, then the completion up to its second-to-last real token: the last
one predicts nothing) become one sequence, and `pack_rows` places the sequences first-fit
decreasing into rows as long as the longest sequence, so attention cost per row stays that of
the padded batch while there are fewer rows.

Sequences sharing a row must not see each other. The packed forward passes
`attention_mask=None` with `position_ids` restarting at 0 for each sequence: transformers (5.x,
`masking_utils.find_packed_sequence_indices`) then builds a block-diagonal causal mask for
sdpa, eager and flex attention, and flash attention derives its varlen boundaries from the
same positions, so no [L, L] mask is built here. The unused tail of a row gets positions
restarting at 0 too, which makes it a sequence of its own that nobody attends to.

Only the logits of completion positions are computed (`logits_to_keep` as a boolean [R, L]
mask, which returns them flattened), then scattered back to [B, T]. Values and gradients equal
`completion_logprobs` (the tests check both to 1e-5). Masks must be contiguous, as
`RolloutBatch` lays them out (left-padded prompts, right-padded completions).
"""

from __future__ import annotations

import torch

from postrl.learner.logprobs import completion_logprobs, token_logprobs
from postrl.rollout.batch import RolloutBatch


def packed_logprobs(model, batch: RolloutBatch, *, temperature: float = 1.0, with_entropy: bool = False,
                    entropy_grad: bool = False, with_vocab_mean: bool = False) -> tuple:
    """log pi(y_t | x, y_<t) for every completion token: [B, T] (and entropy, vocabulary mean [B, T]).

    Same contract and values as `completion_logprobs`; padding positions hold 0.
    """
    B, P = batch.prompt_ids.shape
    T = batch.completion_ids.shape[1]
    prompt_len = batch.prompt_mask.sum(-1)
    completion_len = batch.completion_lengths()
    if bool((prompt_len == 0).any()):
        raise ValueError("packing needs at least one prompt token per row (it predicts the first completion token)")
    rows = (completion_len > 0).nonzero().squeeze(-1)
    if len(rows) == 0:  # no token to score; the plain forward still returns a graph to backprop through
        return completion_logprobs(model, batch, temperature=temperature, with_entropy=with_entropy,
                                   entropy_grad=entropy_grad, with_vocab_mean=with_vocab_mean)
    lengths = prompt_len[rows] + completion_len[rows] - 1
    capacity = int(lengths.max())
    sizes = lengths.tolist()
    bins = pack_rows(sizes, capacity)

    # where each sequence goes: packed row and starting column
    seq_row, seq_start = [0] * len(sizes), [0] * len(sizes)
    for r, members in enumerate(bins):
        start = 0
        for i in members:
            seq_row[i], seq_start[i] = r, start
            start += sizes[i]
    device = batch.device
    seq_row, seq_start = torch.tensor(seq_row, device=device), torch.tensor(seq_start, device=device)

    # token j of a sequence is column P - prompt_len + j of cat(prompt, completion)
    full = batch.input_ids()[rows]
    j = torch.arange(P + T, device=device)[None, :] - (P - prompt_len[rows])[:, None]  # [N, P+T]
    real = (j >= 0) & (j < lengths[:, None])
    col = seq_start[:, None] + j
    row = seq_row[:, None].expand_as(j)
    R = len(bins)
    input_ids = torch.zeros(R, capacity, dtype=full.dtype, device=device)
    input_ids[row[real], col[real]] = full[real]
    # unused tail slots: positions restarting at 0 make them one more sequence of their own
    used = torch.zeros(R, dtype=torch.long, device=device).scatter_add_(0, seq_row, lengths)
    slot = torch.arange(capacity, device=device)[None, :]
    position_ids = slot - used[:, None]
    position_ids[row[real], col[real]] = j[real]

    # logits wanted: sequence positions prompt_len-1 ... prompt_len+completion_len-2, in completion order
    wanted = real & (j >= prompt_len[rows, None] - 1)
    keep = torch.zeros(R, capacity, dtype=torch.bool, device=device)
    keep[row[wanted], col[wanted]] = True
    out = model(input_ids=input_ids, attention_mask=None, position_ids=position_ids, use_cache=False,
                logits_to_keep=keep)
    # the kept logits come flattened in (row, column) order: number the kept slots that way
    slot_index = torch.full((R, capacity), -1, dtype=torch.long, device=device)
    slot_index[keep] = torch.arange(int(keep.sum()), device=device)
    seq = torch.arange(len(rows), device=device)[:, None].expand_as(j)[wanted]
    t = (j - prompt_len[rows, None] + 1)[wanted]  # the completion token each kept position predicts
    logits = out.logits[slot_index[row[wanted], col[wanted]]]
    stats_N = token_logprobs(logits, batch.completion_ids[rows[seq], t], temperature, with_entropy, entropy_grad,
                             with_vocab_mean)

    # logp, entropy, vocab_mean: scattered back to [B, T]
    stats = [None if x is None else x.new_zeros(B, T).index_put((rows[seq], t), x) for x in stats_N]
    return tuple(stats) if with_vocab_mean else tuple(stats[:2])


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices of `lengths` grouped into bins whose lengths sum to <= capacity.

    Longest first (ties keep input order), each into the first bin with room, else a new bin;
    within a bin, indices are in placement order. FFD uses at most 11/9 OPT + 6/9 bins.
    """
    if any(n > capacity for n in lengths):
        raise ValueError(f"a length of {max(lengths)} does not fit a capacity of {capacity}")
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins
