"""Reward functions for the prompt-addition tests (loaded as `hint_rewards:NAME`)."""


def first_char_of_answer(prompts, completions, answer, **kwargs):
    """1.0 when the answer text the reward sees starts like the reference: always true after an
    answer prefix cut from that reference, rarely true for a random model's own first character."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float(t[:1] == str(a)[:1]) for t, a in zip(texts, answer)]
