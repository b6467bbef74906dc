"""Built-in synthetic preference data: correct by construction, deterministic, split like arithmetic."""

import collections

from postrl.config import PrefDataSection
from postrl.data.preference import load_preference_rows
from postrl.data.preference_tasks import (
    DELTAS, arithmetic_pairs, arithmetic_ranked, arithmetic_unpaired, arithmetic_verbose_pairs,
)
from postrl.data.tasks import arithmetic


def _value(row):
    a, b = row["prompt"][-1]["content"].rstrip("=").split("+")
    return int(a) + int(b)


def test_pairs_prefer_the_correct_sum_over_a_near_miss():
    rows = arithmetic_pairs("train", level=2, limit=300)
    for r in rows:
        assert r["chosen"] == r["answer"] == str(_value(r))
        assert int(r["rejected"]) - _value(r) in DELTAS
    assert rows == arithmetic_pairs("train", level=2, limit=300)  # deterministic


def test_perturbations_do_not_depend_on_the_split():
    # the split hash must not pick the perturbation, or every test row gets the same one
    for split in ("train", "test"):
        deltas = collections.Counter(int(r["rejected"]) - _value(r) for r in arithmetic_pairs(split, level=2))
        assert set(deltas) == set(DELTAS) and max(deltas.values()) < 0.25 * sum(deltas.values())


def test_pairs_use_the_arithmetic_split_and_prompts():
    for split in ("train", "test"):
        pairs, problems = arithmetic_pairs(split, level=1), arithmetic(split, level=1)
        assert [r["prompt"] for r in pairs] == [r["prompt"] for r in problems]
    train = {r["prompt"][-1]["content"] for r in arithmetic_pairs("train", level=2)}
    test = {r["prompt"][-1]["content"] for r in arithmetic_pairs("test", level=2)}
    assert train and test and not train & test


def test_verbose_pairs_are_both_correct():
    for r in arithmetic_verbose_pairs("test", level=2, limit=50):
        assert r["chosen"] == r["answer"] and r["rejected"] == f"The answer is {r['answer']}."


def test_unpaired_labels_say_whether_the_completion_is_correct():
    rows = arithmetic_unpaired("train", level=2)
    assert all(r["label"] == (r["completion"] == r["answer"]) for r in rows)
    share = sum(r["label"] for r in rows) / len(rows)
    assert 0.45 < share < 0.55
    assert not any(r["label"] for r in arithmetic_unpaired("train", level=1, desirable_fraction=0.0))


def test_ranked_scores_are_minus_the_distance_to_the_result():
    rows = arithmetic_ranked("train", level=2, num_responses=4, limit=200)
    for r in rows:
        assert len(set(r["responses"])) == 4
        assert r["scores"] == [float(-abs(int(v) - _value(r))) for v in r["responses"]]
        assert r["scores"][r["responses"].index(r["answer"])] == 0.0 == max(r["scores"])
    assert len({r["responses"].index(r["answer"]) for r in rows}) == 4  # the correct one moves around


def test_tasks_load_as_preference_rows_of_each_format():
    kinds = {}
    for task in ("arithmetic_pairs", "arithmetic_verbose_pairs", "arithmetic_unpaired", "arithmetic_ranked"):
        rows = load_preference_rows(PrefDataSection(source=f"task:{task}", limit=3))
        assert rows[0].prompt == [{"role": "user", "content": rows[0].prompt[0]["content"]}]
        assert rows[0].columns["answer"] and rows[0].columns["level"] == 2
        kinds[task] = rows[0].kind
    assert kinds == {"arithmetic_pairs": "paired", "arithmetic_verbose_pairs": "paired",
                     "arithmetic_unpaired": "unpaired", "arithmetic_ranked": "ranked"}
