"""Step splitting and the process-reward types (rewards/process.py)."""

from __future__ import annotations

import pytest
import torch

from postrl.learner.tiny import build_tokenizer
from postrl.rewards.process import (
    PROCESS_REWARDS, completion_token_lists, scatter_step_rewards, step_end_tokens, token_steps,
)
from postrl.rollout.batch import RolloutBatch


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()  # one token per character: token index == character index


def ids(tok, text, eos=False):
    out = tok(text, add_special_tokens=False)["input_ids"]
    return out + [tok.eos_token_id] if eos else out


def test_step_ends_at_each_separator_and_the_last_token(tok):
    # "3+4=7\n" is chars 0-5, "7*2=14\n" chars 6-12, "1" char 13
    assert step_end_tokens(ids(tok, "3+4=7\n7*2=14\n1"), tok) == [5, 12, 13]
    assert [s for _, s in token_steps(ids(tok, "3+4=7\n7*2=14\n1"), tok)] == ["3+4=7", "7*2=14", "1"]


def test_trailing_separator_and_eos_extend_the_last_step(tok):
    # "a\nb\n" + EOS: steps "a" (end 1) and "b"; the blank tail (EOS) joins "b" -> end 4
    assert step_end_tokens(ids(tok, "a\nb\n", eos=True), tok) == [1, 4]
    # trailing separator without EOS: "b\n" ends at its separator, the last token (3)
    assert step_end_tokens(ids(tok, "a\nb\n"), tok) == [1, 3]


def test_blank_lines_are_not_steps(tok):
    # "\na\n\nb": leading blank joins "a" (ends at char 2), the blank line extends "a" to char 3
    steps = token_steps(ids(tok, "\na\n\nb"), tok)
    assert steps == [(3, "a"), (4, "b")]


def test_multi_token_separator(tok):
    # separator "\n\n" spans two tokens; the step ends on the second (char 2 of "a\n\nb\n\nc")
    assert step_end_tokens(ids(tok, "a\n\nb\n\nc"), tok, separator="\n\n") == [2, 5, 6]
    assert step_end_tokens(ids(tok, "a\nb"), tok, separator="\n\n") == [2]  # no separator: one step


def test_empty_and_blank_completions_have_no_steps(tok):
    assert step_end_tokens([], tok) == []
    assert step_end_tokens(ids(tok, "\n", eos=True), tok) == []


def test_empty_separator_is_an_error(tok):
    with pytest.raises(ValueError, match="separator"):
        step_end_tokens(ids(tok, "a"), tok, separator="")


def test_scatter_and_completion_tokens(tok):
    batch = RolloutBatch.from_token_lists([[1], [1]], [ids(tok, "a\nb"), ids(tok, "c")], tok.pad_token_id)
    assert completion_token_lists(batch) == [ids(tok, "a\nb"), ids(tok, "c")]
    out = scatter_step_rewards([[0.5, -1.0], [2.0]], [[1, 2], [0]], (2, 3))
    assert torch.equal(out, torch.tensor([[0.0, 0.5, -1.0], [2.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="row 0: 1 step rewards for 2 step ends"):
        scatter_step_rewards([[0.5]], [[1, 2]], (1, 3))


def test_registry_kind():
    assert PROCESS_REWARDS.kind == "process reward"
