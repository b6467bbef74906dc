"""Preference rows: the three formats, TRL's implicit prompt, sources, and every error message."""

import json
import re

import pytest

from postrl.config import DataSection, PrefDataSection
from postrl.data.loading import DataError
from postrl.data.preference import PreferenceRow, load_preference_rows, unpair

USER = {"role": "user", "content": "2+2="}


def A(text):
    return [{"role": "assistant", "content": text}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def load(tmp_path, rows, **kwargs):
    return load_preference_rows(PrefDataSection(source=write_jsonl(tmp_path / "d.jsonl", rows), **kwargs))


def error(tmp_path, rows, **kwargs) -> str:
    with pytest.raises(DataError) as e:
        load(tmp_path, rows, **kwargs)
    return str(e.value)


# ------------------------------------------------------------------------------------- formats
def test_paired_text_rows_keep_extra_columns(tmp_path):
    [row] = load(tmp_path, [{"prompt": "2+2=", "chosen": "4", "rejected": "5", "source": "x"}])
    assert (row.prompt, row.chosen, row.rejected, row.kind) == ("2+2=", "4", "5", "paired")
    assert row.label is None and row.responses is None and row.columns == {"source": "x"}


def test_paired_chat_rows_and_system_prompt(tmp_path):
    [row] = load(tmp_path, [{"prompt": [USER], "chosen": A("4"), "rejected": A("5")}], system_prompt="Be brief.")
    assert row.prompt == [{"role": "system", "content": "Be brief."}, USER]
    assert row.chosen == A("4") and row.rejected == A("5")


def test_chat_prompt_with_string_responses(tmp_path):
    [row] = load(tmp_path, [{"prompt": [USER], "chosen": "4", "rejected": "5"}])
    assert row.prompt == [USER] and (row.chosen, row.rejected) == ("4", "5")


def test_implicit_prompt_of_conversations_is_their_shared_prefix(tmp_path):
    rows = [{"chosen": [USER, *A("4")], "rejected": [USER, *A("5")]}]
    [row] = load(tmp_path, rows)
    assert row.prompt == [USER] and row.chosen == A("4") and row.rejected == A("5")


def test_string_prompt_beside_full_conversations_uses_the_conversations(tmp_path):
    # some hub sets carry a string prompt and conversations that repeat it (TRL then extracts)
    [row] = load(tmp_path, [{"prompt": "2+2=", "chosen": [USER, *A("4")], "rejected": [USER, *A("5")]}])
    assert row.prompt == [USER] and row.chosen == A("4")


def test_implicit_prompt_of_texts_keeps_the_space_with_the_responses(tmp_path):
    [row] = load(tmp_path, [{"chosen": "Q: 2+2? A: four", "rejected": "Q: 2+2? A: five"}])
    assert (row.prompt, row.chosen, row.rejected) == ("Q: 2+2? A: f", "our", "ive")
    [row] = load(tmp_path, [{"chosen": "Q: 2+2? yes", "rejected": "Q: 2+2? no"}])
    assert (row.prompt, row.chosen, row.rejected) == ("Q: 2+2?", " yes", " no")


def test_unpaired_rows_put_the_completion_in_chosen(tmp_path):
    rows = load(tmp_path, [{"prompt": "a", "completion": "4", "label": True},
                           {"prompt": "b", "completion": A("5"), "label": 0}])
    assert [(r.chosen, r.label, r.kind) for r in rows] == [("4", True, "unpaired"), (A("5"), False, "unpaired")]


def test_ranked_rows(tmp_path):
    [row] = load(tmp_path, [{"prompt": "a", "responses": ["1", "2", "3"], "scores": [0, 2.5, 1]}])
    assert row.kind == "ranked" and row.responses == ["1", "2", "3"] and row.scores == [0.0, 2.5, 1.0]


def test_custom_column_names(tmp_path):
    [row] = load(tmp_path, [{"q": "a", "good": "1", "bad": "2"}],
                 columns={"prompt": "q", "chosen": "good", "rejected": "bad"})
    assert (row.prompt, row.chosen, row.rejected) == ("a", "1", "2")


def test_a_plain_data_section_works_too(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "chosen": "1", "rejected": "2"}])
    assert load_preference_rows(DataSection(source=src), "train")[0].chosen == "1"


@pytest.mark.parametrize("suffix", ["parquet", "csv", "json"])
def test_parquet_csv_and_json_files(tmp_path, suffix):
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    # digits on purpose: CSV type inference reads them as numbers, which must come back as text
    rows = [{"prompt": "a", "chosen": "1", "rejected": "2"}, {"prompt": "b", "chosen": "3", "rejected": "4"}]
    path = tmp_path / f"d.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(rows))
    elif suffix == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        pa_csv.write_csv(pa.Table.from_pylist(rows), path)
    out = load_preference_rows(PrefDataSection(source=str(path)))
    assert [(r.prompt, r.chosen, r.rejected) for r in out] == [("a", "1", "2"), ("b", "3", "4")]


def test_saved_datasets_directory_and_splits(tmp_path):
    import datasets

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"prompt": "a", "chosen": "1", "rejected": "2"}]),
        "test": datasets.Dataset.from_list([{"prompt": "b", "chosen": "3", "rejected": "4"}])})
    dd.save_to_disk(str(tmp_path / "ds"))
    cfg = PrefDataSection(source=str(tmp_path / "ds"))
    assert load_preference_rows(cfg)[0].prompt == "a"
    assert load_preference_rows(cfg, cfg.eval_split)[0].prompt == "b"


def test_a_file_has_no_held_out_split_unless_eval_source_is_set(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "a", "chosen": "1", "rejected": "2"}])
    test = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "b", "chosen": "3", "rejected": "4"}])
    assert load_preference_rows(PrefDataSection(source=train), "test") == []
    assert load_preference_rows(PrefDataSection(source=train, eval_source=test), "test")[0].prompt == "b"


def test_identical_pairs_can_be_skipped(tmp_path):
    rows = [{"prompt": "a", "chosen": "1", "rejected": "1"}, {"prompt": "b", "chosen": "1", "rejected": "2"}]
    with pytest.warns(UserWarning, match="dropped 1 of 2 rows"):
        out = load(tmp_path, rows, identical_pairs="skip")
    assert [r.prompt for r in out] == ["b"]


def test_unpair_makes_a_desirable_and_an_undesirable_example():
    out = unpair([PreferenceRow("p", chosen="1", rejected="2", index=4)])
    assert [(r.chosen, r.label, r.index) for r in out] == [("1", True, 4), ("2", False, 4)]


# -------------------------------------------------------------------------------------- errors
BAD = [
    ([{"prompt": "a", "chosen": "1", "reject": "2"}],
     "row 1 of {src}: no column 'rejected' (did you mean 'reject'? set data.columns.rejected: reject); "
     "paired rows need both chosen and rejected; available columns: 'prompt', 'chosen', 'reject'"),
    ([{"question": "a", "answer": "1"}],
     "row 1 of {src}: no preference columns: expected 'prompt' with 'chosen' + 'rejected' (paired), "
     "'completion' + 'label' (unpaired) or 'responses' + 'scores' (ranked); available columns: 'question', "
     "'answer'; rename the columns or set data.columns.chosen / .rejected / ..."),
    ([{"prompt": "a", "chosen": "", "rejected": "2"}],
     "row 1 of {src}: column 'chosen' is empty; remove the row or fill it in"),
    ([{"prompt": "a", "chosen": 4, "rejected": "2"}],
     "row 1 of {src}: column 'chosen' is type int; expected a non-empty string or a list with one assistant "
     "message {'role': 'assistant', 'content': ...}"),
    ([{"prompt": "a", "chosen": None, "rejected": "2"}],
     "row 1 of {src}: column 'chosen' is null; expected a non-empty string"),
    ([{"prompt": "  ", "chosen": "1", "rejected": "2"}],
     "row 1 of {src}: column 'prompt' is empty; remove the row or fill it in"),
    ([{"prompt": [USER], "chosen": [USER, *A("4")], "rejected": A("5")}],
     "row 1 of {src}: column 'chosen' must hold one assistant message (the response), got roles "
     "['user', 'assistant']; put earlier turns in the prompt column"),
    ([{"chosen": "abc", "rejected": "xyz"}],
     "row 1 of {src}: no column 'prompt', and 'chosen' and 'rejected' share no leading text to take as the "
     "prompt; add a prompt column (or set data.columns.prompt)"),
    ([{"prompt": "a", "chosen": "1", "rejected": "2"}, {"prompt": [USER], "chosen": "1", "rejected": "2"}],
     "row 2 of {src}: the prompt is chat messages but row 1's is plain text; convert the rows to one kind"),
    ([{"prompt": "a", "chosen": "1", "rejected": "2"}, {"prompt": "b", "completion": "1", "label": True}],
     "row 2 of {src}: an unpaired row, but row 1 is paired; every row of a source must have one format"),
    ([{"prompt": "a", "chosen": "42", "rejected": "42"}],
     "row 1 of {src}: chosen and rejected are the same response ('42'), which teaches nothing; fix the row, "
     "or set data.identical_pairs: skip to drop such rows"),
    ([{"prompt": "a", "completion": "1", "label": "maybe"}],
     "row 1 of {src}: column 'label' = 'maybe' is not a label; use true/false (or 1/0)"),
    ([{"prompt": "a", "completion": "1"}],
     "row 1 of {src}: no column 'label'; set data.columns.label; unpaired rows need a completion and a label"),
    ([{"prompt": "a", "responses": ["1"], "scores": [1]}],
     "row 1 of {src}: column 'responses' must be a list of at least 2 responses, got ['1']"),
    ([{"prompt": "a", "responses": ["1", "2"], "scores": [1]}],
     "row 1 of {src}: column 'scores' must be a list of one number per response (2), got [1]"),
    ([{"prompt": "a", "responses": ["1", "2"], "scores": [1, "x"]}],
     "row 1 of {src}: column 'scores' item 1: 'x' is not a finite number"),
    ([{"prompt": "a", "responses": ["1", "2"], "scores": [3, 3]}],
     "row 1 of {src}: every response has score 3, so the row ranks nothing"),
]


@pytest.mark.parametrize("rows,message", BAD, ids=range(len(BAD)))
def test_bad_rows_name_row_column_and_fix(tmp_path, rows, message):
    src = str(tmp_path / "d.jsonl")
    assert message.replace("{src}", src) in error(tmp_path, rows)


def test_empty_file_and_bad_json_line(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataError, match=re.escape("e.jsonl: the file is empty; it needs at least one row")):
        load_preference_rows(PrefDataSection(source=str(tmp_path / "e.jsonl")))
    (tmp_path / "b.jsonl").write_text('{"prompt": "a", "chosen": "1", "rejected": "2"}\n{oops\n')
    with pytest.raises(DataError, match=r"b.jsonl line 2: invalid JSON"):
        load_preference_rows(PrefDataSection(source=str(tmp_path / "b.jsonl")))


def test_unused_prompt_options_are_config_errors():
    with pytest.raises(ValueError, match="data.prompt_template is not used by preference data"):
        PrefDataSection(prompt_template="{q}")
