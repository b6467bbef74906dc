"""Loading reward functions by name and the weighted RewardSet, including output validation."""

import math
import textwrap

import numpy as np
import pytest
import torch

from postrl.config import RewardSpec
from postrl.rewards import RewardSet, load_reward_fn

# A reward function written for TRL: its own signature, columns through **kwargs.
TRL_STYLE = textwrap.dedent('''
    def contains_answer(completions, answer, **kwargs):
        """TRL-style: conversational completions, None when there is no answer."""
        out = []
        for c, a in zip(completions, answer):
            text = c[0]["content"] if isinstance(c, list) else c
            out.append(None if a is None else float(str(a) in text))
        return out

    def uses_ids(prompts, completions, completion_ids, bonus=0.0, **kwargs):
        return [len(ids) + bonus for ids in completion_ids]

    def no_var_kwargs(prompts, completions, completion_ids, scale=1.0):
        return [scale] * len(completions)

    NOT_A_FUNCTION = 3
''')


def spec(name, weight=1.0, **kwargs):
    return RewardSpec(name=name, weight=weight, kwargs=kwargs)


def user_fn(name, body):
    """A RewardSet over one in-line function (bypasses loading) to test output validation."""
    rs = RewardSet([spec("exact_match")])
    rs.fns, rs.weights, rs.names, rs._hparams = [body], [1.0], [name], [set()]
    return rs


# ------------------------------------------------------------------------------------ loading
def test_builtin_loads_with_bound_kwargs():
    fn = load_reward_fn("exact_match", {"numeric": False})
    assert fn(prompts=None, completions=["46.0"], answer=["46"]) == [0.0]


def test_unknown_builtin_lists_valid_names_and_user_syntax():
    with pytest.raises(ValueError, match=r"exact_match.*module:function"):
        load_reward_fn("exact_matc", {})


def test_builtin_rejects_unknown_kwarg():
    # Built-ins take **kwargs for columns; a misspelt hyper-parameter must still be caught.
    with pytest.raises(ValueError, match="'stripp'.*numeric, strip"):
        load_reward_fn("exact_match", {"stripp": True})


def test_trl_style_function_loads_from_a_file(tmp_path):
    path = tmp_path / "my_rewards_file.py"
    path.write_text(TRL_STYLE)
    fn = load_reward_fn(f"{path}:contains_answer", {})
    assert fn(prompts=["q"], completions=[[{"role": "assistant", "content": "it is 7"}]],
              completion_ids=[[1]], answer=["7"]) == [1.0]
    assert load_reward_fn(f"{path}:uses_ids", {}).func is load_reward_fn(f"{path}:uses_ids", {}).func


def test_trl_style_function_loads_from_a_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_mod.py").write_text(TRL_STYLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = load_reward_fn("my_rewards_mod:uses_ids", {"bonus": 0.5})
    assert fn(prompts=["q"], completions=["ab"], completion_ids=[[1, 2]]) == [2.5]


def test_load_errors_name_the_problem(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_err.py").write_text(TRL_STYLE)
    (tmp_path / "my_rewards_broken.py").write_text("import no_such_package_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match=r"no_such_module_xyz.*ModuleNotFoundError"):
        load_reward_fn("no_such_module_xyz:f", {})
    with pytest.raises(ImportError, match=r"my_rewards_broken.*no_such_package_xyz"):
        load_reward_fn("my_rewards_broken:f", {})
    with pytest.raises(AttributeError, match=r"missing.*contains_answer, no_var_kwargs, uses_ids"):
        load_reward_fn("my_rewards_err:missing", {})
    with pytest.raises(TypeError, match="NOT_A_FUNCTION is a int"):
        load_reward_fn("my_rewards_err:NOT_A_FUNCTION", {})
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_reward_fn(f"{tmp_path}/nope.py:f", {})
    with pytest.raises(ValueError, match="'scal'.*scale"):
        load_reward_fn("my_rewards_err:no_var_kwargs", {"scal": 1})


# ---------------------------------------------------------------------------------- RewardSet
def test_weighted_sum_counts_none_as_zero():
    rs = RewardSet([spec("exact_match", 2.0), spec("length_penalty", 0.5, max_tokens=4)])
    completions = ["3", "4", "3"]
    ids = [[0] * 2, [0] * 4, [0] * 8]
    result = rs(["p"] * 3, completions, ids, {"answer": ["3", "3", None]})
    # exact_match: 1, 0, None;  length_penalty (target 0, max 4): -2/4, -4/4, -8/4
    # total = 2*1 + 0.5*(-0.5) = 1.75;  2*0 + 0.5*(-1) = -0.5;  0 + 0.5*(-2) = -1.0
    assert rs.names == ["exact_match", "length_penalty"]
    assert torch.equal(result.total, torch.tensor([1.75, -0.5, -1.0]))
    em = result.per_function["exact_match"]
    assert em[:2].tolist() == [1.0, 0.0] and math.isnan(em[2])
    assert result.total.dtype == torch.float32 and em.dtype == torch.float32


def test_conversational_batch_and_repeated_names():
    rs = RewardSet([spec("exact_match"), spec("exact_match", numeric=False), spec("format")])
    assert rs.names == ["exact_match", "exact_match_2", "format"]
    completions = [[{"role": "assistant", "content": "5.0"}]]
    result = rs([[{"role": "user", "content": "2+3?"}]], completions, [[1, 2, 3]], {"answer": ["5"]})
    assert result.total.tolist() == [1.0]  # numeric match 1 + strict 0 + no \boxed 0


def test_user_function_from_file_in_a_set(tmp_path):
    path = tmp_path / "my_rewards_set.py"
    path.write_text(TRL_STYLE)
    rs = RewardSet([spec(f"{path}:contains_answer"), spec(f"{path}:uses_ids", 0.1)])
    assert rs.names == ["contains_answer", "uses_ids"]
    result = rs(["q", "q"], ["x 7", "x 8"], [[1], [1, 2]], {"answer": ["7", "7"], "extra": [0, 0]})
    assert torch.allclose(result.total, torch.tensor([1.1, 0.2]))


def test_column_named_like_a_hyperparameter_does_not_replace_it():
    rs = RewardSet([spec("format", mode="fullmatch", pattern="a")])
    assert rs(["p"], ["ab"], None, {"mode": ["search"]}).total.tolist() == [0.0]


def test_missing_column_is_named():
    with pytest.raises(ValueError, match=r"'countdown' needs .*'numbers', 'target'.*answer"):
        RewardSet([spec("countdown")])(["p"], ["1"], None, {"answer": ["1"]})


def test_misaligned_column_is_named():
    with pytest.raises(ValueError, match="'answer' has 2 values for 1"):
        RewardSet([spec("exact_match")])(["p"], ["1"], None, {"answer": ["1", "2"]})


def test_tensor_and_array_outputs_are_accepted():
    for out in (torch.tensor([1.0, 0.0]), np.array([1.0, 0.0])):
        assert user_fn("t", lambda **kw: out)(["p", "p"], ["a", "b"], None, {}).total.tolist() == [1.0, 0.0]


@pytest.mark.parametrize("out, error, match", [
    (1.0, TypeError, r"'my_fn' returned float"),
    ({"a": 1.0}, TypeError, r"'my_fn' returned dict"),
    (np.array([[1.0, 0.0]]), TypeError, r"'my_fn' returned ndarray"),
    ([1.0], ValueError, r"'my_fn' returned 1 values for 2 completions"),
    ([1.0, "0.5"], TypeError, r"'my_fn' returned '0.5' \(str\) at index 1"),
    ([1.0, float("nan")], ValueError, r"'my_fn' returned nan at index 1"),
    ([float("inf"), 0.0], ValueError, r"'my_fn' returned inf at index 0"),
])
def test_bad_outputs_raise_with_the_function_name(out, error, match):
    with pytest.raises(error, match=match):
        user_fn("my_fn", lambda **kw: out)(["p", "p"], ["a", "b"], None, {})
