"""Reward functions for the batch-selection end-to-end tests (loaded as `batch_rewards:NAME`)."""


def sum_mod4(prompts, completions, completion_ids, **kwargs):
    """1.0 when the sampled token ids sum to a multiple of 4: a 0/1 reward a random model earns about
    a quarter of the time, so groups of four all fail often (success replay, in-context seeding)."""
    return [float(sum(ids) % 4 == 0) for ids in completion_ids]
