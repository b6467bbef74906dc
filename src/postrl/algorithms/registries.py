"""The algorithm registries (kept apart so families can import them without cycles)."""

from postrl.registry import Registry

ADVANTAGES = Registry("advantage estimator")
"""name -> fn(batch: RolloutBatch, **hparams) -> advantages [B, T] (zero on masked tokens).

needs: "state" (called as fn(batch, state, **hparams): `state` is a dict the estimator may read
and update, kept across steps and saved in checkpoints, so it must hold JSON-serialisable data);
"values" (a learned value model, `learner/critic.py`, is trained alongside the policy: the trainer
fills `batch.values` [B, T] and `batch.last_values` [B] before the call, and the estimator must
leave the critic's targets in `batch.returns` [B, T], optionally restricted by `batch.value_mask`)."""

POLICY_LOSSES = Registry("policy loss")
"""name -> fn(inputs: LossInputs, **hparams) -> LossOutput(per-token loss [B, T], metrics).

needs: "groups" (the loss compares the completions of one prompt: every micro-batch holds whole
groups, and `inputs.group_ids` / `inputs.rewards` are set); "reference" (reference log-probs
are computed even when `kl_coef` is 0); "entropy_grad" (`inputs.entropy` carries gradient even
when `entropy_coef` is 0)."""

PRESETS = Registry("preset")
"""name -> fn() -> dict of dotted config keys: a bundle of registry choices, as data."""
