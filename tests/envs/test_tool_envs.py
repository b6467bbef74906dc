"""The calculator and python envs on hand-written actions, and ToolEnv's timeout and state keys."""

import pytest

from postrl.data.loading import PromptRow
from postrl.data.tool_tasks import calculator_problems
from postrl.envs import ENVS, load_env
from postrl.envs.tool_env import ToolEnv, last_number
from postrl.envs.tools import TOOLS


def _row(expression="482*37", answer="17834"):
    rec = {"prompt": [{"role": "user", "content": f"What is {expression}?"}], "answer": answer,
           "expression": expression, "kind": "product"}
    return PromptRow(index=0, prompt=rec["prompt"], answer=answer, columns=rec)


@pytest.fixture(params=["calculator", "python"])
def env(request):
    e = load_env(request.param, {})()
    e.reset(_row(), seed=0)
    return e


def test_registered_with_papers():
    assert ENVS.get("calculator").arxiv == "2302.04761" and ENVS.get("python").arxiv == "2503.23383"


def test_reset_returns_the_row_prompt(env):
    assert env.reset(_row(), seed=3) == [{"role": "user", "content": "What is 482*37?"}]
    assert env.tools == env.allowed_tools == type(env).tools
    hidden = load_env("calculator", {"describe_tools": False})()
    assert hidden.tools == [] and hidden.allowed_tools == ["calculator"]  # shown: none; callable: still


def test_tool_call_then_right_answer(env):
    r = env.step(env.expert_call(_row()))
    assert (r.observation, r.reward, r.done) == ("17834", 0.0, False)
    assert r.info == {"tool_calls": 1, "tool_errors": 0}
    final = env.step("17834")
    assert (final.observation, final.reward, final.done, final.info["success"]) == (None, 1.0, True, True)


def test_wrong_answer_and_answer_without_a_number(env):
    r = env.step("17835")
    assert (r.reward, r.done, r.info["success"], r.info["tool_calls"]) == (0.0, True, False, 0)
    env.reset(_row(), seed=0)
    assert env.step("I do not know").reward == 0.0


def test_malformed_call_is_an_error_observation_and_the_episode_goes_on(env):
    r = env.step(f"<call>{env.tools[0]}(482*37)</call>")  # unquoted: not a literal
    assert not r.done and r.reward == 0.0 and r.info == {"tool_calls": 1, "tool_errors": 1}
    assert r.observation.startswith("error: ") and "quote it" in r.observation
    r = env.step('<tool_call>{"name": "web_search", "arguments": {}}</tool_call>')
    assert r.observation == f"error: unknown tool 'web_search'; available tools: {env.tools[0]}"
    env.tools = []  # describe_tools: false hides the tools from the prompt, not from the parser
    assert env.step(env.expert_call(_row())).observation == "17834"
    assert env.step("17834").reward == 1.0


def test_several_calls_one_line_each_and_the_limit():
    env = load_env("calculator", {"max_calls_per_turn": 2})()
    env.reset(_row(), seed=0)
    r = env.step('<call>calculator("1+1")</call><call>calculator("2*3")</call><call>calculator("5")</call>')
    assert r.observation == ("2\n6\nerror: too many tool calls in one turn: 1 more than the 2 allowed were not run")
    assert r.info == {"tool_calls": 3, "tool_errors": 1}


def test_state_key_follows_the_observations():
    a, b = load_env("calculator", {})(), load_env("calculator", {})()
    a.reset(_row(), 0)
    b.reset(_row(), 1)
    assert a.state_key() == b.state_key() == "What is 482*37?"
    a.step('<call>calculator("482*37")</call>')
    b.step('<call>calculator("482 * 37")</call>')  # different text, same result: same state
    assert a.state_key() == b.state_key() == "What is 482*37?\x1e17834"
    b.step("<call>calculator(1)</call>")
    assert a.state_key() != b.state_key()


def test_python_tool_errors_and_sandbox_timeout():
    env = load_env("python", {})()
    env.reset(_row(), 0)
    assert env.step('<call>python("x = 482*37")</call>').observation == "(no output: print the result)"
    obs = env.step('<call>python("print(1/0)")</call>').observation
    assert obs.startswith("error: the program raised an exception") and "ZeroDivisionError" in obs
    from postrl.envs import python_tool
    old = python_tool.SANDBOX_TIMEOUT_S
    python_tool.SANDBOX_TIMEOUT_S = 0.5
    try:
        obs = env.step('<call>python("while True: pass")</call>').observation
    finally:
        python_tool.SANDBOX_TIMEOUT_S = old
    assert obs.startswith("error: wall-clock timeout") or obs.startswith("error: CPU")


class _SlowEnv(ToolEnv):
    tools = ["e2_env_sleep"]

    def score(self, answer):
        return 0.0, False


def test_tool_env_timeout_is_an_error_observation():
    if "e2_env_sleep" not in TOOLS:
        @TOOLS.register("e2_env_sleep")
        def e2_env_sleep(seconds: float) -> str:
            """Sleep (a test tool)."""
            import time
            time.sleep(seconds)
            return "woke"

    env = _SlowEnv(tool_timeout_s=0.1)
    env.reset(_row(), 0)
    r = env.step("<call>e2_env_sleep(3)</call>")
    assert r.observation == "error: tool 'e2_env_sleep' timed out after 0.1 s" and r.info["tool_errors"] == 1


def test_bad_env_settings_are_clear_errors():
    with pytest.raises(ValueError, match="max_calls_per_turn >= 1"):
        load_env("calculator", {"max_calls_per_turn": 0})()

    class Bad(ToolEnv):
        tools = ["no_such_tool"]

    with pytest.raises(ValueError, match="unknown tools"):
        Bad()


def test_last_number():
    assert last_number("so 12 then 17,834.") == 17834.0
    assert last_number("-3.5") == -3.5 and last_number("none") is None


def test_calculator_problems_are_hard_without_the_tool():
    rows = calculator_problems("test", limit=50)
    assert {r["kind"] for r in rows} == {"product", "sum"}
    for r in rows:
        assert r["prompt"][0]["content"] == f"What is {r['expression']}?"
        env = load_env("calculator", {})()
        env.reset(PromptRow(0, r["prompt"], r["answer"], r), 0)
        assert env.step(env.expert_call(PromptRow(0, r["prompt"], r["answer"], r))).observation == r["answer"]
