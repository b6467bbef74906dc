"""Each built-in reward on hand-written cases; plain and conversational completions."""

import pytest

from postrl.rewards import REWARDS, completion_text
from postrl.rewards.builtin import countdown, exact_match, format_reward, length_penalty, math_verify


def chat(text):
    return [{"role": "assistant", "content": text}]


def test_every_builtin_is_registered_with_a_paper_and_formula():
    assert {"exact_match", "math_verify", "format", "length_penalty", "countdown"} <= set(REWARDS.names())
    for entry in REWARDS:
        assert entry.paper and entry.summary and entry.formula


def test_completion_text_reads_strings_messages_and_parts():
    assert completion_text("42") == "42"
    assert completion_text(chat("42")) == "42"
    assert completion_text({"role": "assistant", "content": "x"}) == "x"
    # The last assistant message is the answer, after any tool output.
    assert completion_text([{"role": "assistant", "content": "call"}, {"role": "tool", "content": "7"},
                            {"role": "assistant", "content": "final"}]) == "final"
    assert completion_text(chat([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])) == "ab"


# ----------------------------------------------------------------------------------- exact_match
def test_exact_match_strips_and_compares_numbers():
    completions = [" 46 ", "46.0", "47", "forty-six", "46"]
    answers = ["46", 46, "46", "46", None]
    assert exact_match(None, completions, answers) == [1.0, 1.0, 0.0, 0.0, None]


def test_exact_match_options_turn_off_strip_and_numeric():
    assert exact_match(None, [" 46", "46.0"], ["46", "46"], strip=False, numeric=False) == [0.0, 0.0]
    assert exact_match(None, [" 46", "46.0"], ["46", "46"], numeric=False) == [1.0, 0.0]


def test_exact_match_reads_conversational_completions():
    assert exact_match(None, [chat("7"), chat("8")], ["7", "7"]) == [1.0, 0.0]


# ----------------------------------------------------------------------------------- math_verify
def test_math_verify_equivalent_forms_and_wrong_answer():
    completions = ["The answer is $0.5$", "so \\boxed{42}", "\\boxed{41}", chat("\\boxed{72}"), "x"]
    answers = ["\\frac{1}{2}", "42", "42", "72", None]
    assert math_verify(None, completions, answers) == [1.0, 1.0, 0.0, 1.0, None]


def test_math_verify_garbage_is_zero_not_an_error():
    assert math_verify(None, ["", "\\boxed{", "}}}{{{"], ["1", "1", "\\frac{"]) == [0.0, 0.0, 0.0]


def test_math_verify_works_outside_the_main_thread():
    # SIGALRM timeouts would raise in a worker thread; ours are off.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(math_verify, None, ["\\boxed{3}"], ["3"]).result() == [1.0]


# ---------------------------------------------------------------------------------------- format
def test_format_search_finds_boxed_anywhere():
    assert format_reward(None, ["so \\boxed{3}.\nDone", "3", "\\boxed{}"]) == [1.0, 0.0, 0.0]


def test_format_fullmatch_needs_the_whole_text():
    pattern = r"(?s)<think>.*</think>\s*<answer>.*</answer>"
    completions = ["<think>a</think> <answer>3</answer>", "<think>a</think> <answer>3</answer> more",
                   chat("<think>b</think><answer>1</answer>")]
    assert format_reward(None, completions, pattern=pattern, mode="fullmatch") == [1.0, 0.0, 1.0]
    assert format_reward(None, completions, pattern=pattern, mode="search") == [1.0, 1.0, 1.0]


def test_format_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        format_reward(None, ["x"], mode="match")


# -------------------------------------------------------------------------------- length_penalty
def test_length_penalty_counts_tokens_beyond_target():
    ids = [[0] * 10, [0] * 30, [0] * 50]
    # target 20, max 40, scale 2:  -2*0/40 = 0,  -2*10/40 = -0.5,  -2*30/40 = -1.5
    assert length_penalty(None, ["", "", ""], completion_ids=ids, target_tokens=20, max_tokens=40,
                          scale=2.0) == [0.0, -0.5, -1.5]


def test_length_penalty_without_target_or_ids():
    # No target: every unit counts. No ids: characters.  -1 * 64/256 = -0.25
    assert length_penalty(None, ["a" * 64, chat("")]) == [-0.25, 0.0]


# ------------------------------------------------------------------------------------- countdown
@pytest.mark.parametrize("completion, expected", [
    ("(25 - 5) * 4 + 6", 1.0),                  # 20*4+6 = 86, each number once
    ("<think>try</think><answer>6 + 4 * (25 - 5)</answer>", 1.0),
    ("25 * 4 - 5 - 6", 0.0),                    # 89: wrong value
    ("(25 - 5) * 4 + 7", 0.0),                  # 7 is not one of the numbers
    ("(25 - 5) * 4 + 6 + 6 - 6", 0.0),          # 6 reused
    ("(25 - 5) * 4", 0.0),                      # 6 unused
    ("25 / 0 + 5 + 4 + 6", 0.0),                # division by zero
    ("__import__('os').system('echo hi')", 0.0),
    ("(lambda: 86)()", 0.0),
    ("25 ** 4 - 5 - 6", 0.0),                   # power is not allowed
    ("", 0.0),
])
def test_countdown_cases(completion, expected):
    assert countdown(None, [completion], numbers=[[25, 5, 4, 6]], target=[86]) == [expected]


def test_countdown_division_is_exact():
    # 6 / (1 - 3/4) = 24: needs exact fractions, the textbook "24 game" case.
    assert countdown(None, [chat("6 / (1 - 3 / 4)")], numbers=[[6, 1, 3, 4]], target=[24]) == [1.0]
    assert countdown(None, ["(7 + 1) / 3"], numbers=[[7, 1, 3]], target=[3]) == [0.0]  # 8/3
