"""Property tests of the data loaders (hypothesis): any list of records, written as JSON lines or a
JSON list, either loads row for row or raises a DataError naming the row (or line) and a column;
never another exception type, never a row dropped without a word."""

import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from postrl.config import Columns, DataSection
from postrl.data.loading import DataError, load_prompt_dataset, load_sft_dataset

COLUMNS = ["prompt", "messages", "completion", "answer", "text", "question", "x"]
text = st.text(max_size=8) | st.sampled_from(["", " ", "2+2=", "\ud800", "é中🙂", "{x}"])
message = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "assistant", "system"]) | text | st.none(),
                                              "content": text | st.none() | st.integers()})
leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
value = st.recursive(leaf | st.lists(message, max_size=3), lambda inner: st.lists(inner, max_size=2)
                     | st.dictionaries(text, inner, max_size=2), max_leaves=5)
good_prompt = text | st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": text}),
                              min_size=1, max_size=2)
mostly_good = good_prompt | good_prompt | value
base = (st.fixed_dictionaries({"prompt": mostly_good}) | st.fixed_dictionaries({"messages": mostly_good})
        | st.fixed_dictionaries({"prompt": mostly_good, "completion": mostly_good})
        | st.fixed_dictionaries({"text": text | value}) | st.fixed_dictionaries({"question": text | value}))
record = st.builds(lambda b, extra: {**extra, **b}, base, st.dictionaries(st.sampled_from(COLUMNS) | text, value,
                                                                         max_size=2))
_TMP = tempfile.TemporaryDirectory(prefix="postrl_props_")  # hypothesis runs many examples per test: one dir, removed at exit
DIR = Path(_TMP.name)


def write(records: list, as_list: bool) -> str:
    path = DIR / ("d.json" if as_list else "d.jsonl")
    body = json.dumps(records) if as_list else "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(body, encoding="utf-8", errors="surrogatepass")  # "\ud800" stays a JSON escape
    return str(path)


def config(source: str, prompt_column: str, template: str | None) -> DataSection:
    return DataSection(source=source, columns=Columns(prompt=prompt_column), prompt_template=template)


def names_the_row(message: str, n: int) -> bool:
    """A row-level error says `row K` / `line K` (K in 1..n); a file-level one says the file is empty."""
    found = [int(k) for k in re.findall(r"\b(?:row|line) (\d+)\b", message)]
    return any(1 <= k <= n for k in found) or "empty" in message or "no rows" in message


@settings(max_examples=int(__import__("os").environ.get("N", 400)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(record, max_size=5), as_list=st.booleans(),
       prompt_column=st.sampled_from(["prompt", "question"]),
       template=st.sampled_from([None, None, "{question}", "{prompt}{answer}", "{x[0]}"]))
def test_any_records_load_row_for_row_or_raise_a_data_error_naming_the_row(records, as_list, prompt_column, template):
    source = write(records, as_list)
    for load in (load_prompt_dataset, load_sft_dataset):
        try:
            rows = list(load(config(source, prompt_column, template)))
        except DataError as e:
            assert names_the_row(str(e), len(records)), str(e)
            continue
        assert len(rows) == len(records)  # nothing silently dropped
        assert len({isinstance(r.prompt, list) for r in rows if r.prompt != ""}) <= 1  # one kind of prompt
        for r in rows:
            p = r.prompt
            assert (isinstance(p, str) and (p.strip() or load is load_sft_dataset)) or \
                (isinstance(p, list) and all(isinstance(m["role"], str) and isinstance(m["content"], str) for m in p))
            p_text = p if isinstance(p, str) else "".join(m["content"] for m in p)
            p_text.encode("utf-8")  # the tokenizer can take it
            if load is load_sft_dataset:
                assert r.completion.strip()
