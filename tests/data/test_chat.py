import warnings

import pytest

from postrl.config import DataSection
from postrl.data.chat import encode_prompts, encode_sft, render_prompt
from postrl.data.loading import DataError, PromptDataset, PromptRow, SFTRow
from postrl.learner.tiny import build_tokenizer

USER = [{"role": "user", "content": "12+34="}]
TEMPLATED = "<|user|>12+34=<|assistant|>"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def prompt_rows(*prompts):
    return [PromptRow(index=i, prompt=p, answer=None, columns={}) for i, p in enumerate(prompts)]


def test_message_prompts_use_the_chat_template(tok):
    assert render_prompt(tok, USER, DataSection()) == TEMPLATED


def test_string_prompts_stay_raw_under_auto(tok):
    assert render_prompt(tok, "12+34=", DataSection()) == "12+34="
    assert render_prompt(tok, "12+34=", DataSection(system_prompt="Add.")) == "Add.\n12+34="


def test_string_prompts_are_wrapped_under_always(tok):
    assert render_prompt(tok, "12+34=", DataSection(chat_template="always")) == TEMPLATED
    with_system = render_prompt(tok, "12+34=", DataSection(chat_template="always", system_prompt="Add."))
    assert with_system == "<|system|>Add." + TEMPLATED


def test_messages_are_plain_text_under_never(tok):
    messages = [{"role": "system", "content": "Add."}] + USER
    assert render_prompt(tok, messages, DataSection(chat_template="never")) == \
        "system: Add.\nuser: 12+34=\nassistant: "


def test_missing_chat_template_is_an_error_with_the_fix(tok):
    bare = build_tokenizer()
    bare.chat_template = None
    with pytest.raises(DataError, match="model.chat_template.*data.chat_template: never"):
        render_prompt(bare, USER, DataSection())
    assert render_prompt(bare, "12+34=", DataSection()) == "12+34="  # raw text needs no template


def test_encode_prompts_ids_decode_to_the_rendered_text(tok):
    rows = prompt_rows(USER, "7+8=")
    ids, kept = encode_prompts(tok, rows, DataSection())
    assert kept == [0, 1]
    assert tok.decode(ids[0]) == TEMPLATED and tok.decode(ids[1]) == "7+8="
    assert ids[0][0] == tok.convert_tokens_to_ids("<|user|>")  # one id per special token
    assert len(ids[1]) == 4  # character-level tokenizer, no BOS/EOS added


def test_long_prompt_is_an_error_naming_row_length_and_limit(tok):
    rows = PromptDataset(prompt_rows("1+1=", "x" * 20), source="d.jsonl")
    with pytest.raises(DataError) as e:
        encode_prompts(tok, rows, DataSection(max_prompt_tokens=10))
    msg = str(e.value)
    assert "row 2 of d.jsonl" in msg and "20 tokens" in msg and "max_prompt_tokens=10" in msg
    assert "long_prompts: skip" in msg


def test_long_prompt_is_dropped_under_skip(tok):
    rows = prompt_rows("x" * 20, "1+1=", "y" * 11, "2+2=")
    ids, kept = encode_prompts(tok, rows, DataSection(max_prompt_tokens=10, long_prompts="skip"))
    assert kept == [1, 3] and [tok.decode(i) for i in ids] == ["1+1=", "2+2="]


def test_encode_sft_mask_covers_exactly_completion_and_eos(tok):
    rows = [SFTRow(index=0, prompt=USER, completion="46")]
    (ids, mask), = encode_sft(tok, rows, DataSection(), max_tokens=100)
    assert tok.decode(ids) == TEMPLATED + "46<|end|>"
    n_prompt = len(tok(TEMPLATED, add_special_tokens=False)["input_ids"])
    assert mask == [0] * n_prompt + [1, 1, 1]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "46<|end|>"


def test_encode_sft_language_modeling_row_learns_every_token(tok):
    (ids, mask), = encode_sft(tok, [SFTRow(index=0, prompt="", completion="abc")], DataSection(), 100)
    assert tok.decode(ids) == "abc<|end|>" and mask == [1, 1, 1, 1]


def test_encode_sft_truncates_long_rows_from_the_right_and_warns(tok):
    rows = [SFTRow(index=0, prompt="ab", completion="cdefgh"), SFTRow(index=1, prompt="a", completion="b")]
    with pytest.warns(UserWarning, match="1 of 2 rows"):
        (ids, mask), short = encode_sft(tok, rows, DataSection(), max_tokens=5)
    assert tok.decode(ids) == "abcde" and mask == [0, 0, 1, 1, 1]
    assert tok.decode(short[0]) == "ab<|end|>"


def test_encode_sft_keeps_one_completion_token_when_the_prompt_fills_the_budget(tok):
    rows = [SFTRow(index=0, prompt="0123456789", completion="xyz")]
    with pytest.warns(UserWarning):
        (ids, mask), = encode_sft(tok, rows, DataSection(), max_tokens=4)
    assert tok.decode(ids) == "789x" and mask == [0, 0, 0, 1]


def test_encode_sft_without_truncation_does_not_warn(tok):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encode_sft(tok, [SFTRow(index=0, prompt="a", completion="b")], DataSection(), max_tokens=10)
