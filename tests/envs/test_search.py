"""The search env: its corpus and tool, episodes on hand-written actions, its tasks."""

import pytest

from postrl.data import TASKS
from postrl.data.loading import PromptRow
from postrl.envs import ENVS
from postrl.envs.search import NUM_PEOPLE, SearchEnv, expert_calls, normalize_answer, people, questions, search
from postrl.envs.tools import TOOLS


def person(i=7):
    return people()[i]


def row(question, answer):
    return PromptRow(index=0, prompt=[{"role": "user", "content": question}], answer=answer, columns={})


def test_corpus_is_fixed_and_names_are_unique():
    ps = people()
    assert len(ps) == NUM_PEOPLE == len({p.name for p in ps})
    assert all(p.mentor != p.name for p in ps)
    people.cache_clear()
    assert people() == ps  # rebuilt from the fixed seed: the same corpus


def test_search_returns_the_persons_passage_first():
    p = person()
    lines = search(p.name).split("\n")
    assert lines[0] == p.passage() and len(lines) <= 2
    assert search(f"where was {p.name} born").split("\n")[0] == p.passage()
    assert search("qqqq") == "no results"
    assert "search" in TOOLS


def test_correct_search_then_answer_succeeds():
    p = person()
    env = SearchEnv()
    first = env.reset(row(f"Where was {p.name} born?", p.city), seed=0)
    assert first == [{"role": "user", "content": f"Where was {p.name} born?"}]
    r = env.step(f'I will look it up. <call>search("{p.name}")</call>')
    assert not r.done and r.reward == 0.0 and r.info["tool_calls"] == 1
    assert p.passage() in r.observation
    r = env.step(f"{p.city}.")
    assert (r.observation, r.reward, r.done, r.info["success"]) == (None, 1.0, True, True)


def test_a_wrong_answer_fails():
    p = person()
    env = SearchEnv()
    env.reset(row(f"What does {p.name} do?", p.job), seed=0)
    r = env.step("the " + ("pilot" if p.job != "pilot" else "baker"))
    assert (r.reward, r.done, r.info["success"]) == (0.0, True, False)


def test_a_malformed_call_is_an_error_observation_not_an_exception():
    env = SearchEnv()
    env.reset(row("Where was Zzz born?", "x"), seed=0)
    for bad in ('<call>search("unclosed', "<call>lookup(q='x')</call>", "<call>search(42)</call>"):
        r = env.step(bad)
        assert not r.done and r.reward == 0.0
        assert r.observation.startswith("error:") and r.info["tool_errors"] == 1


def test_two_hop_expert_searches_person_then_mentor():
    p = person()
    mentor = next(q for q in people() if q.name == p.mentor)
    calls = expert_calls(p.name, "mentor_city")
    assert calls == [f'<call>search("{p.name}")</call>', f'<call>search("{mentor.name}")</call>']
    env = SearchEnv()
    env.reset(row(f"Where was {p.name}'s mentor born?", mentor.city), seed=0)
    assert f"mentor is {mentor.name}" in env.step(calls[0]).observation
    assert mentor.passage() in env.step(calls[1]).observation
    assert env.step(mentor.city).reward == 1.0


def test_state_key_repeats_when_the_same_results_were_seen():
    p = person()
    a, b = SearchEnv(), SearchEnv()
    for e in (a, b):
        e.reset(row(f"Where was {p.name} born?", p.city), seed=0)
    assert a.state_key() == b.state_key()
    a.step(f'<call>search("{p.name}")</call>')
    b.step(f'<call>search("{p.name.upper()}!")</call>')  # another query, the same passages
    assert a.state_key() == b.state_key()
    b.step('<call>search("qqqq")</call>')
    assert a.state_key() != b.state_key()


def test_normalize_answer_is_squad_style():
    assert normalize_answer("  The Baker!") == "baker"
    assert normalize_answer("a  Tessimor.") == "tessimor"


def test_tasks_split_by_question_and_sft_rows_end_on_an_assistant_turn():
    train, test = TASKS["search_qa"]("train"), TASKS["search_qa"]("test")
    qs = lambda rows: {r["prompt"][0]["content"] for r in rows}  # noqa: E731
    assert len(train) + len(test) == 2 * NUM_PEOPLE and not qs(train) & qs(test)
    assert len(TASKS["search_qa"]("train", hops=[1, 2])) + len(TASKS["search_qa"]("test", hops=[1, 2])) == len(questions())
    sft = TASKS["search_qa_sft"]("train", noise=0.0, describe_tools=False, limit=5)
    assert len(sft) == 10  # search, then answer: two rows per episode
    call, answer = sft[0]["messages"], sft[1]["messages"]
    assert call[-1]["content"].startswith('<call>search("') and call[0]["role"] == "user"
    assert [m["role"] for m in answer] == ["user", "assistant", "tool", "assistant"]
    assert answer[-1]["content"] == TASKS["search_qa"]("train", limit=5)[0]["answer"]
    described = TASKS["search_qa_sft"]("train", noise=0.0, limit=1)
    assert described[0]["messages"][0]["role"] == "system" and "search(" in described[0]["messages"][0]["content"]
    with pytest.raises(ValueError, match="hops"):
        TASKS["search_qa"]("train", hops=3)


def test_registered():
    assert "search" in ENVS
