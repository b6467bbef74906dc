"""Per-token log-probs (and entropy) of completion tokens under a causal LM.

One forward over `cat(prompt, completion)` with `logits_to_keep=T+1`, so only the completion
positions produce logits (a large-vocabulary model never materialises [B, P+T, V]). The log-prob
of the chosen token is `logit - logsumexp(logits)`, which needs no [B, T, V] log-softmax copy.
"""

from __future__ import annotations

import torch

from postrl.rollout.batch import RolloutBatch


def completion_logprobs(model, batch: RolloutBatch, *, temperature: float = 1.0,
                        with_entropy: bool = False, entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(y_t | x, y_<t) for every completion token: [B, T] (and entropy [B, T])."""
    ids = batch.input_ids()
    attn = batch.attention_mask()
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    T = batch.completion_ids.shape[1]
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False, logits_to_keep=T + 1)
    # position P-1+t predicts completion token t
    return token_logprobs(out.logits[:, :-1], batch.completion_ids, temperature, with_entropy, entropy_grad)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                   with_entropy: bool = False, entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log-softmax at `targets` (and entropy) of logits [..., V]: the one place this maths lives,
    so the plain, shared-prefix and packed forwards round identically."""
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
    return logp, entropy
