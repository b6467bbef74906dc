"""The algorithm registries (kept apart so families can import them without cycles)."""

from postrl.registry import Registry

ADVANTAGES = Registry("advantage estimator")
"""name -> fn(batch: RolloutBatch, **hparams) -> advantages [B, T] (zero on masked tokens)."""

POLICY_LOSSES = Registry("policy loss")
"""name -> fn(logprobs, old_logprobs, advantages, mask, *, ref_logprobs, entropy, **hparams)
-> LossOutput(per-token loss [B, T], metrics)."""

PRESETS = Registry("preset")
"""name -> fn() -> dict of dotted config keys: a bundle of registry choices, as data."""
