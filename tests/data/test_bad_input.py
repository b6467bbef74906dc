"""Dataset inputs the fuzzer and the reliability audit found: each is a DataError naming the file,
the row and the column with the fix, or is read correctly; none is a crash or a silent change."""

import json

import pytest

from postrl.config import DataSection, RLConfig, resolve
from postrl.data.chat import context_limits, encode_prompts
from postrl.data.loading import DataError, PromptDataset, PromptRow, load_prompt_dataset, load_sft_dataset
from postrl.learner.tiny import build_tokenizer

USER = {"role": "user", "content": "2+2="}


def write(path, text: str | bytes):
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return str(path)


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_mixed_chat_and_plain_prompts_name_a_row_of_each(tmp_path):
    src = write(tmp_path / "d.jsonl", jsonl([{"prompt": "a"}, {"prompt": "b"}, {"prompt": [USER]}]))
    with pytest.raises(DataError, match=r"d.jsonl: row 1 has a plain-text prompt but row 3 has a list of chat "
                                        r"messages; a dataset must use one kind.*Convert the plain rows"):
        load_prompt_dataset(DataSection(source=src))
    sft = write(tmp_path / "s.jsonl", jsonl([{"messages": [USER, {"role": "assistant", "content": "4"}]},
                                             {"prompt": "2+2=", "completion": "4"}]))
    with pytest.raises(DataError, match="row 2 has a plain-text prompt but row 1 has a list of chat messages"):
        load_sft_dataset(DataSection(source=sft))


def test_sft_text_rows_mix_with_either_kind(tmp_path):
    src = write(tmp_path / "s.jsonl", jsonl([{"text": "free text"}, {"prompt": [USER], "completion": "4"}]))
    assert [r.completion for r in load_sft_dataset(DataSection(source=src))] == ["free text", "4"]


def test_a_byte_order_mark_is_not_part_of_the_first_row(tmp_path):
    src = write(tmp_path / "d.jsonl", b"\xef\xbb\xbf" + jsonl([{"prompt": "a"}]).encode())
    assert load_prompt_dataset(DataSection(source=src))[0].prompt == "a"
    csv = write(tmp_path / "d.csv", b"\xef\xbb\xbfprompt,answer\nhi,1\n")
    assert load_prompt_dataset(DataSection(source=csv))[0].prompt == "hi"


def test_duplicate_csv_columns_are_an_error_not_a_silent_overwrite(tmp_path):
    src = write(tmp_path / "d.csv", "prompt,answer,prompt\na,1,b\n")
    with pytest.raises(DataError, match=r"d.csv: column name\(s\) 'prompt' appear more than once"):
        load_prompt_dataset(DataSection(source=src))


@pytest.mark.parametrize("name", ["d.jsonl", "d.json"])
def test_json_nested_too_deeply_is_a_data_error(tmp_path, name):
    deep = "[" * 100_000 + "]" * 100_000
    text = f'{{"prompt": "a", "x": {deep}}}\n' if name.endswith("l") else f'[{{"prompt": "a", "x": {deep}}}]'
    with pytest.raises(DataError, match="nested too deeply"):
        load_prompt_dataset(DataSection(source=write(tmp_path / name, text)))


def test_an_unpaired_surrogate_escape_names_row_column_and_position(tmp_path):
    src = write(tmp_path / "d.jsonl", '{"prompt": "ok"}\n{"prompt": "ab\\ud800c"}\n')
    with pytest.raises(DataError, match=r"row 2 of .*d.jsonl: column 'prompt' holds an unpaired surrogate "
                                        r"'\\ud800' at character 3"):
        load_prompt_dataset(DataSection(source=src))
    msgs = write(tmp_path / "m.jsonl", jsonl([{"messages": [{"role": "user", "content": "x\ud83d"}]}]))
    with pytest.raises(DataError, match=r"column 'messages' message 1 key 'content' holds an unpaired"):
        load_prompt_dataset(DataSection(source=msgs))


def test_a_template_field_that_does_not_fit_the_value_is_a_data_error(tmp_path):
    src = write(tmp_path / "d.jsonl", jsonl([{"q": 3}]))
    with pytest.raises(DataError, match=r"row 1 of .*: data.prompt_template '\{q\[0\]\}' is not a valid format"):
        load_prompt_dataset(DataSection(source=src, prompt_template="{q[0]}"))


# ----------------------------------------------------------------------- prompt length limits
def rows(*prompts):
    return PromptDataset([PromptRow(index=i, prompt=p, answer=None, columns={}) for i, p in enumerate(prompts)],
                         source="d.jsonl")


def test_dropped_long_prompts_are_counted_in_a_warning():
    with pytest.warns(UserWarning, match=r"2 of 4 prompts were longer than data.max_prompt_tokens=10 .* dropped"):
        _, kept = encode_prompts(build_tokenizer(), rows("x" * 20, "1+1=", "y" * 11, "2+2="),
                                 DataSection(max_prompt_tokens=10, long_prompts="skip"))
    assert kept == [1, 3]


def test_a_prompt_that_leaves_no_room_for_the_completion_names_row_and_context():
    tok, data = build_tokenizer(), rows("1+1=", "x" * 30)
    with pytest.raises(DataError, match=r"row 2 of d.jsonl: the prompt has 30 tokens, and with 40 new tokens "
                                        r".* reach 70 tokens, more than the model's context of 64 positions"):
        encode_prompts(tok, data, DataSection(), context=64, new_tokens=40)
    with pytest.warns(UserWarning, match=r"1 of 2 prompts .* the model's context \(64 positions\) less 40 new tokens"):
        _, kept = encode_prompts(tok, data, DataSection(long_prompts="skip"), context=64, new_tokens=40)
    assert kept == [0]


def test_context_limits_of_a_run_config():
    cfg = resolve(RLConfig, {"model": {"tiny": {"max_position_embeddings": 128}},
                             "rollout": {"max_new_tokens": 16}, "eval": {"max_new_tokens": 32}})
    assert context_limits(cfg) == {"context": 128, "new_tokens": 32}
