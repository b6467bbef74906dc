"""Per-token log-probs (and entropy, vocabulary mean) of completion tokens under a causal LM.

One forward over `cat(prompt, completion)` with `logits_to_keep=T+1`, so only the completion
positions produce logits (a large-vocabulary model never materialises [B, P+T, V]). The log-prob
of the chosen token is `logit - logsumexp(logits)`, which needs no [B, T, V] log-softmax copy;
so is the vocabulary mean `mean_v log pi(v|s_t) = mean_v(logit_v) - logsumexp(logits)`.

Every forward (plain, `prefix_sharing.py`, `packing.py`) returns `(logp, entropy)`, or
`(logp, entropy, vocab_mean)` when called with `with_vocab_mean=True` (losses whose registry
entry needs "vocab_mean", e.g. ROVER's next-state value), each [B, T].
"""

from __future__ import annotations

import torch

from postrl.rollout.batch import RolloutBatch


def completion_logprobs(model, batch: RolloutBatch, *, temperature: float = 1.0, with_entropy: bool = False,
                        entropy_grad: bool = False, with_vocab_mean: bool = False) -> tuple:
    """log pi(y_t | x, y_<t) for every completion token: [B, T] (and entropy, vocabulary mean [B, T])."""
    ids = batch.input_ids()
    attn = batch.attention_mask()
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    T = batch.completion_ids.shape[1]
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False, logits_to_keep=T + 1)
    # position P-1+t predicts completion token t
    stats = token_logprobs(out.logits[:, :-1], batch.completion_ids, temperature, with_entropy, entropy_grad,
                           with_vocab_mean)
    return stats if with_vocab_mean else stats[:2]


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                   with_entropy: bool = False, entropy_grad: bool = False, with_vocab_mean: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """log-softmax at `targets`, entropy and vocabulary mean of log-softmax, of logits [..., V]: the
    one place this maths lives, so the plain, shared-prefix and packed forwards round identically.
    Entropy and vocabulary mean are None unless asked for."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    entropy = None
    if with_entropy:  # without gradient unless asked: a [.., V] graph is costly at large V
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            probs = torch.softmax(logits, dim=-1)
            entropy = lse - (probs * logits).sum(-1)
    # mean_v log pi(v) = mean_v(logit_v) - lse: one more [.., V] reduction on logits the graph holds anyway
    vocab_mean = logits.mean(-1) - lse if with_vocab_mean else None
    return logp, entropy, vocab_mean
