"""task:calculator_problems and task:tool_trajectories (the SFT warm start of the tool envs)."""

import pytest

from postrl.config import DataSection
from postrl.data import TASKS, load_sft_dataset
from postrl.data.tool_tasks import calculator_problems, tool_trajectories
from postrl.learner.tiny import build_tokenizer
from postrl.rollout.chat_turns import ChatRenderer


def test_problems_hand_checked_and_splits_disjoint():
    train, test = calculator_problems("train"), calculator_problems("test")
    assert len(train) + len(test) == 20000
    assert not {r["expression"] for r in train} & {r["expression"] for r in test}
    row = next(r for r in test if r["expression"] == "569*82")  # 569*82 = 45580 + 1138 = 46658
    assert row["answer"] == "46658" and row["kind"] == "product" and row["prompt"] == [
        {"role": "user", "content": "What is 569*82?"}]
    sums = calculator_problems("train", kinds=["sum"], limit=3)
    for r in sums:
        a, b, c = map(int, r["expression"].split("+"))
        assert r["answer"] == str(a + b + c) and all(10 <= x < 1000 for x in (a, b, c))
    with pytest.raises(ValueError, match="valid kinds: product, sum"):
        calculator_problems("train", kinds=["division"])


@pytest.mark.parametrize("env, call", [("calculator", '<call>calculator("{e}")</call>'),
                                       ("python", '<call>python("print({e})")</call>')])
def test_trajectory_rows(env, call):
    rows = tool_trajectories("train", env=env, tool_use_rate=0.5, describe_tools=False, limit=6)
    problems = calculator_problems("train", limit=6)
    by_turn = [r for r in rows if r["turn"] == 1]
    assert len(rows) == 6 + len(by_turn) and 0 < len(by_turn) < 6  # hash-chosen: some with, some without
    i = 0
    for p in problems:
        first = rows[i]
        assert first["prompt"] == p["prompt"]
        if first["used_tool"]:
            assert first["completion"] == call.format(e=p["expression"])
            second = rows[i + 1]
            assert second["prompt"] == p["prompt"] + [{"role": "assistant", "content": first["completion"]},
                                                      {"role": "tool", "content": p["answer"]}]
            assert second["completion"] == p["answer"]
            i += 2
        else:
            assert first["completion"] == p["answer"]
            i += 1


def test_tool_use_rate_extremes_and_tool_description():
    assert all(not r["used_tool"] for r in tool_trajectories("train", tool_use_rate=0.0, limit=20))
    rows = tool_trajectories("train", tool_use_rate=1.0, limit=5)
    assert len(rows) == 10 and rows[0]["prompt"][0]["role"] == "system"
    assert rows[0]["prompt"][0]["content"].startswith("Tools:\n- calculator(expression: string)")
    twice = tool_trajectories("train", tool_use_rate=0.5, repeats=8, limit=1)
    assert {r["prompt"][-1]["content"] for r in twice if r["turn"] == 0} == {rows_user(twice)}
    assert {r["used_tool"] for r in twice} == {True, False}  # each repeat chooses afresh
    with pytest.raises(ValueError, match="tool_use_rate must be in"):
        tool_trajectories("train", tool_use_rate=1.5)
    with pytest.raises(ValueError, match="unknown env"):
        tool_trajectories("train", env="calculater")


def rows_user(rows):
    return rows[0]["prompt"][-1]["content"]


def test_sft_rows_render_exactly_like_the_rollout():
    """SFT prompt + completion of each turn == the concat rollout's text of the same episode."""
    tok = build_tokenizer()
    cfg = DataSection(source="task:tool_trajectories",
                      task_kwargs={"tool_use_rate": 1.0, "describe_tools": False, "limit": 2})
    rows = load_sft_dataset(cfg)
    assert TASKS.get("tool_trajectories").fn is tool_trajectories and len(rows) == 4
    call_row, answer_row = rows[0], rows[1]
    eos = tok.eos_token
    sft_turn0 = tok.apply_chat_template(call_row.prompt, add_generation_prompt=True, tokenize=False) + call_row.completion + eos
    sft_turn1 = tok.apply_chat_template(answer_row.prompt, add_generation_prompt=True, tokenize=False) + answer_row.completion + eos
    r = ChatRenderer(tok, tools=[])
    rollout = (tok.decode(r.first_ids(call_row.prompt)) + call_row.completion + eos
               + r.observation_text("tool", answer_row.prompt[-1]["content"], action_ended_with=eos))
    assert sft_turn1.startswith(rollout) and sft_turn1 == rollout + answer_row.completion + eos
    assert sft_turn1.startswith(sft_turn0)
