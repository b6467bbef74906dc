"""load_env: built-ins, module:Class, file.py:Class, and the errors for bad names / classes."""

import pytest

from postrl.envs import ENVS, StepResult, load_env
from postrl.envs.base import Env


def test_step_result_defaults():
    r = StepResult("hi")
    assert (r.observation, r.reward, r.done, r.info) == ("hi", 0.0, False, {})


def test_load_env_from_module_and_file(tmp_path):
    make = load_env("tests.envs.tiny_envs:CountEnv", {"target": 3})
    env = make()
    assert isinstance(env, Env)
    assert make() is not env  # a fresh env per episode
    assert env.target == 3
    f = tmp_path / "my_env.py"
    f.write_text("from postrl.envs import StepResult\n"
                 "class E:\n"
                 "    def reset(self, row, seed): return 'go'\n"
                 "    async def astep(self, action): return StepResult(None, 1.0, True)\n")
    env = load_env(f"{f}:E", {})()
    assert env.reset(None, 0) == "go"


def test_load_env_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown env 'nosuch'.*module:Class"):
        load_env("nosuch", {})
    with pytest.raises(AttributeError, match="has no attribute 'Nope'.*CountEnv"):
        load_env("tests.envs.tiny_envs:Nope", {})
    f = tmp_path / "bad.py"
    f.write_text("class NoStep:\n    def reset(self, row, seed): return 'x'\n"
                 "def fn(): pass\n")
    with pytest.raises(TypeError, match=r"has no step \(or async astep\) method"):
        load_env(f"{f}:NoStep", {})
    with pytest.raises(TypeError, match="not a class"):
        load_env(f"{f}:fn", {})
    with pytest.raises(ValueError, match="takes no parameter 'targte'.*target"):
        load_env("tests.envs.tiny_envs:CountEnv", {"targte": 3})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_env(str(tmp_path / "missing.py") + ":E", {})


def test_unknown_builtin_suggests_close_match():
    @ENVS.register("zz_test_counter", paper="(test)", summary="test env")
    class Counter:
        def reset(self, row, seed):
            return "x"

        def step(self, action):
            return StepResult(None, done=True)

    try:
        with pytest.raises(ValueError, match="did you mean 'zz_test_counter'"):
            load_env("zz_test_countr", {})
        assert isinstance(load_env("zz_test_counter", {})(), Counter)
    finally:
        ENVS._entries.pop("zz_test_counter")


def test_example_user_env_hand_computed():
    from postrl.data.loading import PromptRow

    env = load_env("examples/agent_env.py:HintedArithmetic", {"tries": 3, "retry_cost": 0.1})()
    assert env.reset(PromptRow(0, "12+34=", "46", {}), seed=0) == "12+34="
    assert env.step("40").observation == "higher, try again"
    assert env.step("no idea").observation == "no number found, try again"
    last = env.step("46")
    assert (last.reward, last.done, last.info) == (pytest.approx(0.8), True, {"success": True})  # 1 - 0.1 * 2
