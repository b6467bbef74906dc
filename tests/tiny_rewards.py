"""TRL-style reward functions used by the end-to-end tests (loaded as `tiny_rewards:NAME`)."""


def digit_fraction(prompts, completions, **kwargs):
    """Share of digits among the completion's characters: a dense signal a random model can climb."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def length_reward(prompts, completions, completion_ids, **kwargs):
    """Number of completion tokens: varies within a group only when some completion ends early."""
    return [float(len(ids)) for ids in completion_ids]


def token_id_mean(prompts, completions, completion_ids, **kwargs):
    """Mean sampled token id / 256: differs between almost any two samples of a random model, so
    groups have non-zero advantages even when no completion ends early (unlike `length_reward`)."""
    return [sum(ids) / max(len(ids), 1) / 256 for ids in completion_ids]


def token_parity(prompts, completions, completion_ids, **kwargs):
    """1.0 when the sampled token ids sum to an even number: a binary (verifier-like) reward that a
    random model's samples split on, so most groups have both labels."""
    return [float(sum(ids) % 2 == 0) for ids in completion_ids]
