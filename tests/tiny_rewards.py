"""TRL-style reward functions used by the end-to-end tests (loaded as `tiny_rewards:NAME`)."""


def digit_fraction(prompts, completions, **kwargs):
    """Share of digits among the completion's characters: a dense signal a random model can climb."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def length_reward(prompts, completions, completion_ids, **kwargs):
    """Number of completion tokens: varies in every group, so every advantage is non-zero."""
    return [float(len(ids)) for ids in completion_ids]
