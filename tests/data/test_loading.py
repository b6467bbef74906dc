import json

import pytest

from postrl.config import DataSection
from postrl.data.loading import DataError, load_prompt_dataset, load_records, load_sft_dataset

USER = {"role": "user", "content": "2+2="}
ASSISTANT = {"role": "assistant", "content": "4"}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def cfg(source, **kwargs):
    return DataSection(source=source, **kwargs)


# ------------------------------------------------------------------------------ TRL formats
def test_standard_prompt_only(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "2+2=", "answer": "4", "level": 1}])
    ds = load_prompt_dataset(cfg(src))
    assert len(ds) == 1 and not ds.conversational and ds.source == src
    row = ds[0]
    assert (row.index, row.prompt, row.answer) == (0, "2+2=", "4")
    assert row.columns == {"answer": "4", "level": 1}


def test_conversational_prompt_only(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"prompt": [USER]}])
    ds = load_prompt_dataset(cfg(src))
    assert ds.conversational and ds[0].prompt == [USER]
    assert ds[0].answer is None and ds[0].columns == {"answer": None}


def test_standard_prompt_completion(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "2+2=", "completion": "4"}])
    assert load_prompt_dataset(cfg(src))[0].columns["completion"] == "4"
    sft = load_sft_dataset(cfg(src))
    assert (sft[0].prompt, sft[0].completion) == ("2+2=", "4")


def test_conversational_prompt_completion(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"prompt": [USER], "completion": [ASSISTANT]}])
    assert load_prompt_dataset(cfg(src))[0].prompt == [USER]
    sft = load_sft_dataset(cfg(src))
    assert (sft[0].prompt, sft[0].completion) == ([USER], "4")


def test_conversational_language_modeling(tmp_path):
    system = {"role": "system", "content": "Be brief."}
    src = write_jsonl(tmp_path / "d.jsonl", [{"messages": [system, USER, ASSISTANT], "answer": "4"}])
    row = load_prompt_dataset(cfg(src))[0]
    assert row.prompt == [system, USER]
    assert row.columns == {"answer": "4", "completion": "4"}
    sft = load_sft_dataset(cfg(src))[0]
    assert (sft.prompt, sft.completion) == ([system, USER], "4")


def test_messages_without_trailing_assistant_are_all_prompt(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"messages": [USER]}])
    row = load_prompt_dataset(cfg(src))[0]
    assert row.prompt == [USER] and "completion" not in row.columns


def test_standard_language_modeling_for_sft(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"text": "The sky is blue."}])
    sft = load_sft_dataset(cfg(src))[0]
    assert (sft.prompt, sft.completion) == ("", "The sky is blue.")


def test_sft_uses_answer_when_there_is_no_completion():
    rows = load_sft_dataset(cfg("task:arithmetic", task_kwargs={"level": 1}, limit=3))
    assert len(rows) == 3
    for row in rows:
        a, b = row.prompt[0]["content"][:-1].split("+")
        assert row.completion == str(int(a) + int(b))


def test_json_list_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"prompt": "a"}, {"prompt": "b"}]), encoding="utf-8")
    assert [r.prompt for r in load_prompt_dataset(cfg(str(path)))] == ["a", "b"]


def test_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": [USER], "answer": "4"},
                                         {"prompt": [USER], "answer": "5"}]), path)
    ds = load_prompt_dataset(cfg(str(path)))
    assert [r.prompt for r in ds] == [[USER], [USER]] and [r.answer for r in ds] == ["4", "5"]


def test_csv_file(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('question,answer\n"What is 2+2?",4\n"What is 3+3?",6\n', encoding="utf-8")
    ds = load_prompt_dataset(cfg(str(path), columns={"prompt": "question"}))
    assert [r.prompt for r in ds] == ["What is 2+2?", "What is 3+3?"]
    assert [r.answer for r in ds] == [4, 6]


def test_saved_dataset_dict_picks_the_split(tmp_path):
    import datasets

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"prompt": "a", "answer": "1"}]),
        "test": datasets.Dataset.from_list([{"prompt": "b", "answer": "2"}, {"prompt": "c", "answer": "3"}]),
    })
    dd.save_to_disk(str(tmp_path / "saved"))
    c = cfg(str(tmp_path / "saved"))
    assert [r.prompt for r in load_prompt_dataset(c)] == ["a"]
    assert [r.prompt for r in load_prompt_dataset(c, split="test")] == ["b", "c"]
    with pytest.raises(DataError, match="available splits: train, test"):
        load_prompt_dataset(c, split="validation")


def test_saved_single_dataset(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"prompt": [USER]}]).save_to_disk(str(tmp_path / "saved"))
    assert load_prompt_dataset(cfg(str(tmp_path / "saved")))[0].prompt == [USER]


def test_task_source_and_description():
    rows, where = load_records("task:arithmetic", split="test", task_kwargs={"level": 1})
    assert where == "task:arithmetic[test]" and rows and "level" in rows[0]
    ds = load_prompt_dataset(cfg("task:arithmetic", limit=5), split="test")
    assert len(ds) == 5 and ds.conversational and ds[0].columns["level"] == 2


def test_unknown_task_lists_valid_tasks():
    with pytest.raises(DataError, match="valid tasks: task:arithmetic, task:arithmetic_pairs, .*task:countdown"):
        load_records("task:nope")


def test_bad_task_arguments_are_data_errors():
    with pytest.raises(DataError, match="valid splits"):
        load_records("task:arithmetic", split="validation")
    with pytest.raises(DataError, match="no parameter 'digits'"):
        load_records("task:arithmetic", task_kwargs={"digits": 3})


# --------------------------------------------------------------------------- column mapping
def test_column_mapping(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"question": "q?", "solution": "s", "id": 7}])
    ds = load_prompt_dataset(cfg(src, columns={"prompt": "question", "answer": "solution"}))
    assert ds[0].prompt == "q?" and ds[0].answer == "s"
    assert ds[0].columns == {"solution": "s", "id": 7, "answer": "s"}


def test_prompt_template_builds_the_prompt_from_columns(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"question": "2+2?", "answer": "4"}])
    ds = load_prompt_dataset(cfg(src, prompt_template="Q: {question}\nA:"))
    assert ds[0].prompt == "Q: 2+2?\nA:" and ds[0].columns["question"] == "2+2?"


def test_prompt_template_missing_key_names_key_row_and_columns(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"question": "a"}, {"query": "b"}])
    with pytest.raises(DataError) as e:
        load_prompt_dataset(cfg(src, prompt_template="{question}"))
    assert "row 2 of" in str(e.value) and "d.jsonl" in str(e.value)
    assert "'question'" in str(e.value) and "'query'" in str(e.value)


def test_answer_pattern_extracts_gsm8k_answer(tmp_path):
    row = {"question": "Natalia sold 48 clips...", "answer": "She sold 48/2 = 24 in May.\n#### 72"}
    src = write_jsonl(tmp_path / "gsm8k.jsonl", [row])
    ds = load_prompt_dataset(cfg(src, columns={"prompt": "question"}, answer_pattern=r"####\s*(.+)"))
    assert ds[0].answer == "72" and ds[0].columns["answer"] == "72"


def test_answer_pattern_without_match_names_row_and_pattern(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "answer": "#### 1"}, {"prompt": "p", "answer": "2"}])
    with pytest.raises(DataError, match=r"row 2 of .*d\.jsonl.*####"):
        load_prompt_dataset(cfg(src, answer_pattern=r"####\s*(.+)"))


def test_system_prompt_is_prepended_to_messages_only(tmp_path):
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": [USER]}])
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": "plain"}])
    assert load_prompt_dataset(cfg(chat, system_prompt="Be brief."))[0].prompt == \
        [{"role": "system", "content": "Be brief."}, USER]
    assert load_prompt_dataset(cfg(plain, system_prompt="Be brief."))[0].prompt == "plain"  # chat.render_prompt adds it


def test_limit_keeps_the_first_rows(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"prompt": str(i)} for i in range(10)])
    assert [r.prompt for r in load_prompt_dataset(cfg(src, limit=3))] == ["0", "1", "2"]


# ------------------------------------------------------------------------------- bad inputs
def assert_error(fn, *needles):
    with pytest.raises(DataError) as e:
        fn()
    for needle in needles:
        assert needle in str(e.value), f"{needle!r} not in {str(e.value)!r}"
    return str(e.value)


def test_missing_prompt_column_names_file_row_columns_and_fix(tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "a"}])
    msg = assert_error(lambda: load_prompt_dataset(cfg(src)), "bad.jsonl", "row 1", "'prompt'", "'question'")
    assert "set data.columns.prompt" in msg


def test_empty_prompt_names_file_row_and_column(tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}] * 6 + [{"prompt": "   "}])
    assert_error(lambda: load_prompt_dataset(cfg(src)), "row 7 of", "bad.jsonl", "column 'prompt' is empty")


def test_wrong_prompt_type_names_the_type(tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"prompt": 42}])
    assert_error(lambda: load_prompt_dataset(cfg(src)), "row 2 of", "bad.jsonl", "'prompt'", "type int")


def test_message_without_content_is_an_error(tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": [{"role": "user"}]}])
    assert_error(lambda: load_prompt_dataset(cfg(src)), "row 1 of", "bad.jsonl", "'prompt'", "'content'")


def test_message_with_unknown_role_is_fine(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"prompt": [{"role": "tool", "content": "x"}]}])
    assert load_prompt_dataset(cfg(src))[0].prompt[0]["role"] == "tool"


def test_invalid_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "b"\n', encoding="utf-8")
    assert_error(lambda: load_prompt_dataset(cfg(str(path))), "bad.jsonl", "line 2", "invalid JSON")


@pytest.mark.parametrize("name, data", [("bad.jsonl", b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n'),
                                        ("bad.csv", b"prompt\ncaf\xe9\n")])
def test_non_utf8_bytes_name_file_and_line(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    assert_error(lambda: load_prompt_dataset(cfg(str(tmp_path / name))), name, "line 2", "UTF-8")


def test_invalid_json_list_names_file_and_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n{"prompt": "a"},\n{"prompt": }\n]', encoding="utf-8")
    assert_error(lambda: load_prompt_dataset(cfg(str(path))), "bad.json", "line 3", "invalid JSON")


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.json", "empty.csv", "empty.parquet"])
def test_empty_file_is_an_error(tmp_path, name):
    (tmp_path / name).write_text("\n", encoding="utf-8")
    assert_error(lambda: load_prompt_dataset(cfg(str(tmp_path / name))), name, "empty")


def test_missing_file_is_an_error(tmp_path):
    assert_error(lambda: load_records(str(tmp_path / "nope.jsonl")), "nope.jsonl", "does not exist")


def test_sft_missing_completion_names_row_and_fix(tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p"}])
    assert_error(lambda: load_sft_dataset(cfg(src)), "row 1 of", "bad.jsonl", "'completion'",
                 "data.columns.completion")


def test_sft_messages_must_end_with_assistant(tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [USER]}])
    assert_error(lambda: load_sft_dataset(cfg(src)), "row 1 of", "bad.jsonl", "'messages'", "assistant")


def test_unknown_hub_dataset_is_a_data_error(monkeypatch):
    import datasets
    import huggingface_hub

    # Offline mode makes the hub lookup fail at once instead of waiting on the network. The
    # libraries read these at import, so patch their constants too.
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    assert_error(lambda: load_records("no-such-user/no-such-dataset-xyz"),
                 "no-such-user/no-such-dataset-xyz", "hub")
