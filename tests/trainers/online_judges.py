"""A pairwise judge for `postrl online` tests: the completion that sorts later wins (hard labels,
0.5 on a tie), so any two different completions of a random model get a strict preference."""


def _text(c):
    return c[0]["content"] if isinstance(c, list) else c


def later_text_wins(prompts, completions_a, completions_b):
    out = []
    for a, b in zip(completions_a, completions_b):
        ta, tb = _text(a), _text(b)
        out.append(1.0 if ta > tb else 0.0 if ta < tb else 0.5)
    return out
