"""task:arithmetic_verbose: three answer lengths of the same result, fixed per problem."""

from postrl.data.length_tasks import arithmetic_verbose
from postrl.data.loading import load_sft_dataset
from postrl.config import DataSection


def test_three_styles_of_the_right_answer_in_about_equal_shares():
    rows = arithmetic_verbose("train", limit=3000)
    styles = {"bare": 0, "one": 0, "two": 0}
    for r in rows:
        c = r["completion"]
        if c == r["answer"]:
            styles["bare"] += 1
        elif c == f"The answer is {r['answer']}.":
            styles["one"] += 1
        else:
            assert c == f"Let me add them. The answer is {r['answer']}."
            styles["two"] += 1
    assert all(900 < n < 1100 for n in styles.values()), styles


def test_style_is_a_function_of_the_problem_and_budgets_match_it():
    a = {r["prompt"][0]["content"]: r["completion"] for r in arithmetic_verbose("train", seed=0, limit=500)}
    b = {r["prompt"][0]["content"]: r["completion"] for r in arithmetic_verbose("train", seed=1)}
    assert all(b[k] == v for k, v in a.items())  # another order, the same answer per problem
    for r in arithmetic_verbose("test", budget_prefix=True, limit=200):
        budget, rest = r["completion"].split(": ", 1)
        assert budget == {r["answer"]: "Budget 8", f"The answer is {r['answer']}.": "Budget 24"}.get(rest, "Budget 48")
        assert len(rest) <= int(budget.split()[1])  # the character-level tokenizer: within its budget


def test_loads_as_sft_data():
    rows = load_sft_dataset(DataSection(source="task:arithmetic_verbose", task_kwargs={"limit": 5}))
    # the completion column wins over the answer column (the task keeps `answer` for evaluation)
    assert [r.completion for r in rows] == [r["completion"] for r in arithmetic_verbose("train", limit=5)]
