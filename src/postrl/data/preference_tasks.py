"""Built-in synthetic preference data from the arithmetic task, so `postrl pref` runs offline.

Each task takes the arithmetic task's problems (same levels, same hash-based train/test split,
`seed` order and `limit`) and adds responses:
  arithmetic_pairs          chosen = the correct result, rejected = a wrong one
  arithmetic_verbose_pairs  chosen = the bare result, rejected = the same result in a sentence
  arithmetic_unpaired       one completion per problem, correct (label true) or wrong (false)
  arithmetic_ranked         the correct result and wrong ones, scored by -|value - result|
  arithmetic_rationale_pairs  arithmetic_pairs plus a `rationale` column: "12+34=46; 47 is off by 1"
Wrong results are deterministic perturbations of the right one (off by 1, 2, 10 or 11 up or
down, picked by a stable hash of the problem), so every run builds the same data. Rows keep the
arithmetic task's `answer` and `level` columns, so the greedy accuracy of the policy can be
evaluated on the same prompts.
"""

from __future__ import annotations

from postrl.data.tasks import TASKS, arithmetic, hash_fraction

DELTAS = (1, -1, 2, -2, 10, -10, 11, -11)
"""Perturbations of a wrong answer: a carry slip (10, 11) or a last-digit slip (1, 2)."""


def _wrong(text: str, answer: str, k: int = 0) -> str:
    """The k-th distinct wrong answer to problem `text` (stable in `text`). The hash is salted: the
    unsalted one decides the split, and would give every test problem the same perturbation."""
    start = int(hash_fraction("wrong:" + text) * len(DELTAS))
    return str(int(answer) + DELTAS[(start + k) % len(DELTAS)])


def _problems(split: str, level, seed: int, test_fraction: float, limit: int | None) -> list[dict]:
    return arithmetic(split, level=level, seed=seed, test_fraction=test_fraction, limit=limit)


@TASKS.register("arithmetic_pairs", paper="built-in synthetic preference data",
                summary="arithmetic prompts; chosen = the correct result, rejected = a perturbed wrong one")
def arithmetic_pairs(split: str, *, level: int | list[int] = 2, seed: int = 0, test_fraction: float = 0.1,
                     limit: int | None = None, margin: bool = False) -> list[dict]:
    """Paired rows `{prompt, chosen, rejected, answer, level}`: "12+34=" -> chosen "46", rejected
    e.g. "47" or "36". `margin=True` adds a `margin` column, the gap of the closeness reward
    r(v) = -|v - result| between chosen and rejected: |rejected - result|, 1 or 2 for a last-digit
    slip (hard to tell apart), 10 or 11 for a carry slip (easy); MPO splits pairs on it."""
    out = []
    for r in _problems(split, level, seed, test_fraction, limit):
        wrong = _wrong(r["prompt"][-1]["content"], r["answer"])
        out.append({**r, "chosen": r["answer"], "rejected": wrong,
                    **({"margin": float(abs(int(wrong) - int(r["answer"])))} if margin else {})})
    return out


@TASKS.register("arithmetic_rationale_pairs", paper="built-in synthetic preference data",
                summary="arithmetic_pairs with a rationale column explaining why the chosen result wins")
def arithmetic_rationale_pairs(split: str, *, level: int | list[int] = 2, seed: int = 0, test_fraction: float = 0.1,
                               limit: int | None = None) -> list[dict]:
    """`arithmetic_pairs` rows plus `rationale`: the worked result and how far off the rejected one
    is, "12+34=" -> chosen "46", rejected "47", rationale "12+34=46; 47 is off by 1"."""
    out = []
    for r in arithmetic_pairs(split, level=level, seed=seed, test_fraction=test_fraction, limit=limit):
        off = abs(int(r["rejected"]) - int(r["answer"]))
        out.append({**r, "rationale": f"{r['prompt'][-1]['content']}{r['answer']}; {r['rejected']} is off by {off}"})
    return out


@TASKS.register("arithmetic_verbose_pairs", paper="built-in synthetic preference data",
                summary="arithmetic prompts; chosen = the bare result, rejected = a wordy sentence with it")
def arithmetic_verbose_pairs(split: str, *, level: int | list[int] = 2, seed: int = 0,
                             test_fraction: float = 0.1, limit: int | None = None) -> list[dict]:
    """Concise vs verbose: both correct; chosen "46", rejected "The answer is 46."."""
    return [{**r, "chosen": r["answer"], "rejected": f"The answer is {r['answer']}."}
            for r in _problems(split, level, seed, test_fraction, limit)]


@TASKS.register("arithmetic_unpaired", paper="built-in synthetic preference data",
                summary="arithmetic prompts with one completion each and a desirable/undesirable label (KTO)")
def arithmetic_unpaired(split: str, *, level: int | list[int] = 2, seed: int = 0, test_fraction: float = 0.1,
                        limit: int | None = None, desirable_fraction: float = 0.5) -> list[dict]:
    """Unpaired rows `{prompt, completion, label, answer, level}`: a stable `desirable_fraction`
    of problems get the correct result (label true), the rest a wrong one (label false)."""
    if not 0.0 <= desirable_fraction <= 1.0:
        raise ValueError(f"desirable_fraction must be in [0, 1], got {desirable_fraction}")
    out = []
    for r in _problems(split, level, seed, test_fraction, limit):
        text = r["prompt"][-1]["content"]
        good = hash_fraction("label:" + text) < desirable_fraction
        out.append({**r, "completion": r["answer"] if good else _wrong(text, r["answer"]), "label": good})
    return out


@TASKS.register("arithmetic_ranked", paper="built-in synthetic preference data",
                summary="arithmetic prompts with several answers scored by closeness to the result (LiPO)")
def arithmetic_ranked(split: str, *, level: int | list[int] = 2, seed: int = 0, test_fraction: float = 0.1,
                      limit: int | None = None, num_responses: int = 4) -> list[dict]:
    """Ranked rows `{prompt, responses, scores, answer, level}`: the correct result and
    `num_responses - 1` distinct wrong ones, in a stable shuffled order, each scored
    -|value - result| (so the correct one scores 0 and the best)."""
    if not 2 <= num_responses <= len(DELTAS) + 1:
        raise ValueError(f"num_responses must be in 2..{len(DELTAS) + 1}, got {num_responses}")
    out = []
    for r in _problems(split, level, seed, test_fraction, limit):
        text, answer = r["prompt"][-1]["content"], r["answer"]
        values = [answer] + [_wrong(text, answer, k) for k in range(num_responses - 1)]
        # a stable order, so the correct answer is not always first
        values.sort(key=lambda v: hash_fraction(f"{text}|{v}"))
        out.append({**r, "responses": values, "scores": [float(-abs(int(v) - int(answer))) for v in values]})
    return out
