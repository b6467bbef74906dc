"""Dataset loading and validation: any source -> checked `PromptRow`s (RL) or `SFTRow`s (SFT).

`load_records` turns a source into raw rows: `task:NAME` (a built-in task), a .jsonl/.json/
.parquet/.csv file (a file IS the split: `split` is ignored, use `data.eval_source` for a
separate eval file), a directory written by `datasets.save_to_disk` or holding data files, or a
hub dataset name. `load_prompt_dataset` / `load_sft_dataset` then map columns (`data.columns`,
`prompt_template`, `system_prompt`, `answer_pattern`) and validate every row, so a bad row fails
at start-up with a `DataError` naming the file, the 1-based row, the column and the fix, rather
than deep inside a training step. All TRL dataset formats load unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from postrl.config import DataSection
from postrl.data.tasks import TASKS

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


class DataError(ValueError):
    """A data problem; the message names the file, the 1-based row, the column and the fix."""


@dataclass
class PromptRow:
    """One RL prompt and everything reward functions may need about it."""

    index: int
    """Row number in the dataset (0-based; messages show it 1-based)."""
    prompt: str | list[dict]
    """Plain text, or chat messages `[{"role", "content"}]` (system prompt already prepended)."""
    answer: Any
    """Reference answer after `answer_pattern`; None if the dataset has no answer column."""
    columns: dict[str, Any]
    """Every column except the one the prompt came from, plus `answer` (the reference answer
    above) and, for `messages` rows ending in an assistant turn, `completion`. Passed to reward
    functions as keyword arguments, as in TRL."""


@dataclass
class SFTRow:
    """One supervised example: the prompt and the assistant text to learn."""

    index: int
    prompt: str | list[dict]
    completion: str


class PromptDataset:
    """A validated, list-like set of `PromptRow`s."""

    def __init__(self, rows: list[PromptRow], source: str):
        self.rows = rows
        self.source = source
        """Human description of where the rows came from, used in messages."""

    @property
    def conversational(self) -> bool:
        """True if any row's prompt is a list of chat messages."""
        return any(isinstance(r.prompt, list) for r in self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> PromptRow:
        return self.rows[i]

    def __iter__(self) -> Iterator[PromptRow]:
        return iter(self.rows)


# ------------------------------------------------------------------------------------- sources
def is_single_file(source: str) -> bool:
    """True when `source` is a data file: it holds one split, so there is no held-out part."""
    return Path(source).suffix.lower() in FILE_SUFFIXES


def hold_out(items: list, fraction: float, seed: int, where: str, what: str = "row(s)") -> tuple[list, list]:
    """(kept, held out): a `seed`-chosen `fraction` of `items` (at least one) held out, both in the
    original order; for data without a held-out split. Too few items to keep one is a DataError."""
    import random

    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n = max(1, round(fraction * len(items)))
    if len(items) - n < 1:
        raise DataError(f"{where}: {len(items)} {what} are too few to hold some out for evaluation; add rows "
                        "or give data.eval_source")
    out = set(order[:n])
    return [t for i, t in enumerate(items) if i not in out], [items[i] for i in sorted(out)]


def load_records(source: str, *, split: str = "train", subset: str | None = None,
                 task_kwargs: dict | None = None) -> tuple[list[dict], str]:
    """Raw rows of `source` and a short description of it for messages (e.g. "data/x.jsonl")."""
    if source.startswith("task:"):
        return _task_records(source[len("task:"):], split, task_kwargs or {})
    path = Path(source).expanduser()
    if path.is_dir():
        return _dir_records(path, split), str(path)
    if is_single_file(source):
        if not path.is_file():
            raise DataError(f"data file {source} does not exist; check data.source / data.eval_source")
        return _file_records(path), str(path)
    if path.is_file():
        raise DataError(f"{source}: unsupported file type {path.suffix!r}; use one of "
                        f"{', '.join(FILE_SUFFIXES)}")
    return _hub_records(source, split, subset), f"{source}[{split}]"


def _task_records(name: str, split: str, kwargs: dict) -> tuple[list[dict], str]:
    where = f"task:{name}[{split}]"
    if name not in TASKS:
        raise DataError(f"data.source: unknown task {name!r}; valid tasks: "
                        f"{', '.join('task:' + n for n in TASKS.names())}")
    try:
        TASKS.check_kwargs(name, kwargs, where="data.task_kwargs")
        return TASKS[name](split, **kwargs), where
    except ValueError as e:  # unknown split/level/parameter: the task's message says what is valid
        raise DataError(f"{where}: {e}") from None


def _file_records(path: Path) -> list[dict]:
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}: the file is empty; it needs at least one row")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _arrow_records(path, suffix)
    try:  # checked here (also for CSV) so the message can name the line
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not valid UTF-8 (byte 0x{data[e.start]:02x}); "
                        "save the file as UTF-8") from None
    if suffix == ".csv":
        return _arrow_records(path, suffix)
    text = text.removeprefix("\ufeff")  # a byte-order mark (Windows editors) is not part of the data
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {e.lineno}: invalid JSON ({e.msg}); the file must be a "
                            "JSON list of objects or JSON lines") from None
        except RecursionError:
            raise DataError(f"{path}: the JSON is nested too deeply to read; flatten the rows") from None
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise DataError(f"row {i + 1} of {path}: expected a JSON object, got "
                                f"{type(row).__name__}")
        return rows
    # JSON lines (also accepted for .json): parsed line by line so errors name the line.
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {lineno}: invalid JSON ({e.msg} at column {e.colno}); "
                            "each line must be one JSON object") from None
        except RecursionError:
            raise DataError(f"{path} line {lineno}: the JSON is nested too deeply to read; flatten "
                            "the row") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _arrow_records(path: Path, suffix: str) -> list[dict]:
    # pyarrow (a dependency of `datasets`) reads these directly: no cache files, nested
    # columns such as message lists come back as Python lists of dicts.
    import pyarrow as pa
    from pyarrow import csv as pa_csv, parquet as pa_parquet

    try:
        table = pa_parquet.read_table(path) if suffix == ".parquet" else pa_csv.read_csv(path)
    except (pa.ArrowException, OSError) as e:
        kind = "Parquet" if suffix == ".parquet" else "CSV (UTF-8, with a header row)"
        raise DataError(f"{path}: could not read it as {kind}: {e}") from None
    names = table.column_names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # to_pylist would keep only the last of them, silently
        raise DataError(f"{path}: column name(s) {', '.join(map(repr, twice))} appear more than once in "
                        "the header; rename them so each column has its own name")
    rows = table.to_pylist()
    if not rows:
        raise DataError(f"{path}: the file has no rows")
    return rows


def _dir_records(path: Path, split: str) -> list[dict]:
    import datasets

    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:
            raise DataError(f"{path}: could not load the saved dataset: {e}") from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: no split {split!r}; available splits: "
                                f"{', '.join(ds)} (set data.split / data.eval_split)")
            ds = ds[split]
        return ds.to_list()  # a saved single Dataset IS the split, like a file
    try:
        return datasets.load_dataset(str(path), split=split).to_list()
    except Exception as e:
        raise DataError(f"{path}: could not load split {split!r} from the data files in this "
                        f"directory: {type(e).__name__}: {e}") from None


def _hub_records(name: str, split: str, subset: str | None) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as e:  # not found, offline, unknown subset/split: all mean "fix the source"
        raise DataError(
            f"data source {name!r} is not a local file or directory and could not be loaded from "
            f"the Hugging Face hub (subset={subset!r}, split={split!r}): {type(e).__name__}: {e}. "
            "Check the path (files must end in .jsonl/.json/.parquet/.csv), the hub name, "
            "data.subset and the split") from None
    return ds.to_list()


def _limited_records(cfg: DataSection, split: str | None, source: str | None) -> tuple[list[dict], str]:
    records, where = load_records(source or cfg.source, split=split or cfg.split,
                                  subset=cfg.subset, task_kwargs=cfg.task_kwargs)
    if cfg.limit is not None:
        records = records[:cfg.limit]
    if not records:
        raise DataError(f"{where}: no rows; check data.source and the split")
    return records, where


# --------------------------------------------------------------------------------- RL prompts
def load_prompt_dataset(cfg: DataSection, split: str | None = None,
                        source: str | None = None) -> PromptDataset:
    """Load `source` (default `cfg.source`) split `split` (default `cfg.split`) as RL prompts."""
    records, where = _limited_records(cfg, split, source)
    pattern = _compile_pattern(cfg.answer_pattern)
    rows = [_prompt_row(i, rec, cfg, pattern, where) for i, rec in enumerate(records)]
    _check_one_format(rows, where)
    return PromptDataset(rows, where)


def _prompt_row(i: int, rec: dict, cfg: DataSection, pattern: re.Pattern | None,
                where: str) -> PromptRow:
    col = cfg.columns
    at = f"row {i + 1} of {where}"
    columns = dict(rec)
    if cfg.prompt_template is not None:
        prompt: str | list[dict] = _format_template(cfg.prompt_template, rec, at)
        _check_prompt(prompt, "data.prompt_template", at)
    elif col.prompt in rec:
        prompt = _check_prompt(rec[col.prompt], col.prompt, at)
        del columns[col.prompt]
    elif col.messages in rec:
        messages = _check_prompt(rec[col.messages], col.messages, at, messages_only=True)
        del columns[col.messages]
        prompt, completion = _split_last_assistant(messages)
        if not prompt:
            raise DataError(f"{at}: column {col.messages!r} has only an assistant message, so no "
                            "prompt is left; RL needs the user turn(s) before it")
        if completion is not None:
            columns["completion"] = completion
    else:
        raise _missing_prompt_error(rec, col, at)

    if isinstance(prompt, list) and cfg.system_prompt and prompt[0]["role"] != "system":
        # A row that already starts with a system message keeps its own (two system turns break
        # many chat templates). String prompts get cfg.system_prompt when rendered (chat.py).
        prompt = [{"role": "system", "content": cfg.system_prompt}] + prompt

    answer = None
    if col.answer in rec:
        answer = rec[col.answer]
        if pattern is not None:
            m = pattern.search(str(answer))
            if m is None:
                raise DataError(f"{at}: data.answer_pattern {pattern.pattern!r} does not match "
                                f"column {col.answer!r} = {_short(answer)}; fix the pattern or the row")
            answer = (m.group(1) if pattern.groups else m.group(0)).strip()
    elif pattern is not None:
        raise DataError(f"{at}: data.answer_pattern is set but the row has no column "
                        f"{col.answer!r}; available columns: {_names(rec)}; set data.columns.answer")
    columns["answer"] = answer
    return PromptRow(index=i, prompt=prompt, answer=answer, columns=columns)


def _compile_pattern(pattern: str | None) -> re.Pattern | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as e:
        raise DataError(f"data.answer_pattern {pattern!r} is not a valid regular expression: {e}") from None


def _format_template(template: str, rec: dict, at: str) -> str:
    try:
        return template.format(**rec)
    except KeyError as e:
        raise DataError(f"{at}: data.prompt_template uses {{{e.args[0]}}} but the row has no "
                        f"column {e.args[0]!r}; available columns: {_names(rec)}") from None
    except (IndexError, ValueError, AttributeError, TypeError) as e:
        # "{}" (positional) or an unbalanced brace; literal braces must be doubled: "{{" "}}".
        raise DataError(f"{at}: data.prompt_template {template!r} is not a valid format string "
                        f"over the row's columns ({e}); use named fields like {{question}} and "
                        "write literal braces as {{ and }}") from None


def _missing_prompt_error(rec: dict, col, at: str) -> DataError:
    names = [k for k in rec if isinstance(rec[k], (str, list))] or list(rec)
    return DataError(f"{at}: no column {col.prompt!r} or {col.messages!r} for the prompt; "
                     f"available columns: {_names(rec)}; set data.columns.prompt to one of "
                     f"{', '.join(map(repr, names))}, or set data.prompt_template")


# ------------------------------------------------------------------------------------------ SFT
def load_sft_dataset(cfg: DataSection, split: str | None = None,
                     source: str | None = None) -> list[SFTRow]:
    """Load `source` as (prompt, completion) pairs for supervised fine-tuning.

    Formats, tried in order: prompt + completion (a conversational completion is one assistant
    message), prompt + answer (how built-in tasks serve as SFT warm starts), `messages` (the last
    assistant message is the completion, everything before it the prompt), `text` (prompt "",
    completion = text). `prompt_template` and `answer_pattern` do not apply; `system_prompt` does.
    """
    records, where = _limited_records(cfg, split, source)
    rows = [_sft_row(i, rec, cfg, where) for i, rec in enumerate(records)]
    _check_one_format([r for r in rows if r.prompt != ""], where)  # `text` rows have no prompt
    return rows


def _sft_row(i: int, rec: dict, cfg: DataSection, where: str) -> SFTRow:
    col = cfg.columns
    at = f"row {i + 1} of {where}"
    if col.prompt in rec:
        prompt = _check_prompt(rec[col.prompt], col.prompt, at)
        if col.completion in rec:
            completion = _completion_text(rec[col.completion], col.completion, at)
        elif col.answer in rec and rec[col.answer] is not None:
            completion = _check_text(str(rec[col.answer]), f"column {col.answer!r}", at)
        else:
            raise DataError(f"{at}: SFT needs a completion: no column {col.completion!r} or "
                            f"{col.answer!r}; available columns: {_names(rec)}; set "
                            "data.columns.completion")
    elif col.messages in rec:
        messages = _check_prompt(rec[col.messages], col.messages, at, messages_only=True)
        prompt, completion = _split_last_assistant(messages)
        if completion is None:
            raise DataError(f"{at}: column {col.messages!r} must end with an assistant message "
                            f"(the text to learn); its last role is {messages[-1]['role']!r}")
    elif "text" in rec:
        prompt, completion = "", rec["text"]
        if not isinstance(completion, str):
            raise DataError(f"{at}: column 'text' must be a string, got {type(completion).__name__}")
        _check_text(completion, "column 'text'", at)
    else:
        raise DataError(f"{at}: no column {col.prompt!r}, {col.messages!r} or 'text'; available "
                        f"columns: {_names(rec)}; set data.columns.prompt (and "
                        "data.columns.completion) to the right columns")
    if not completion.strip():
        raise DataError(f"{at}: the completion is empty; SFT needs text to learn")
    if isinstance(prompt, list) and cfg.system_prompt and (not prompt or prompt[0]["role"] != "system"):
        prompt = [{"role": "system", "content": cfg.system_prompt}] + prompt
    return SFTRow(index=i, prompt=prompt, completion=completion)


def _completion_text(value: Any, name: str, at: str) -> str:
    if isinstance(value, str):
        return _check_text(value, f"column {name!r}", at)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) \
            and isinstance(value[0].get("content"), str):
        return _check_text(value[0]["content"], f"column {name!r}", at)
    raise DataError(f"{at}: column {name!r} must be a string or a list with one assistant "
                    f"message {{'role': 'assistant', 'content': ...}}, got {_short(value)}")


# ------------------------------------------------------------------------------------ checking
def _check_prompt(value: Any, name: str, at: str, messages_only: bool = False) -> str | list[dict]:
    """`value` if it is a non-empty string or message list, else a DataError saying what is wrong."""
    expected = ("a list of {'role', 'content'} messages" if messages_only else
                "a string or a list of {'role', 'content'} messages")
    if isinstance(value, str) and not messages_only:
        if not value.strip():
            raise DataError(f"{at}: column {name!r} is empty; remove the row or fill it in")
        return _check_text(value, f"column {name!r}", at)
    if value is None:
        raise DataError(f"{at}: column {name!r} is empty (null); remove the row or fill it in")
    if not isinstance(value, list):
        raise DataError(f"{at}: column {name!r} has type {type(value).__name__}; expected {expected}")
    if not value:
        raise DataError(f"{at}: column {name!r} is an empty message list; remove the row or fill it in")
    for k, m in enumerate(value, 1):
        if not isinstance(m, dict):
            raise DataError(f"{at}: column {name!r} message {k} has type {type(m).__name__}; "
                            f"expected {expected}")
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                found = "is missing (or null)" if m.get(key) is None else f"has type {type(m[key]).__name__}"
                raise DataError(f"{at}: column {name!r} message {k}: key {key!r} {found}; each "
                                "message needs string 'role' and 'content'")
    if not any(m["content"].strip() for m in value):
        raise DataError(f"{at}: column {name!r} is empty (every message has empty content)")
    for k, m in enumerate(value, 1):
        _check_text(m["role"], f"column {name!r} message {k} key 'role'", at)
        _check_text(m["content"], f"column {name!r} message {k} key 'content'", at)
    return value


def _check_text(text: str, what: str, at: str) -> str:
    """`text` if the tokenizer can take it; a lone UTF-16 surrogate (from a JSON escape like
    "\\ud800", which decodes to no character) cannot be encoded and would fail deep in a step."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f"{at}: {what} holds an unpaired surrogate {text[e.start]!r} at character "
                        f"{e.start + 1}, which is not text (a broken \\uXXXX escape in the file); fix or "
                        "remove it") from None
    return text


def _check_one_format(rows: list, where: str) -> None:
    """Plain-text and chat-message prompts render differently (data.chat_template), so a dataset
    holding both is almost always a conversion mistake; say where each kind first occurs."""
    first: dict[bool, int] = {}
    for r in rows:
        first.setdefault(isinstance(r.prompt, list), r.index)
    if len(first) == 2:
        raise DataError(f"{where}: row {first[False] + 1} has a plain-text prompt but row {first[True] + 1} has "
                        "a list of chat messages; a dataset must use one kind, since they render differently "
                        "(data.chat_template). Convert the plain rows to [{'role': 'user', 'content': ...}] "
                        "messages, or the message rows to text")


def _split_last_assistant(messages: list[dict]) -> tuple[list[dict], str | None]:
    """(messages before a trailing assistant turn, its content) or (messages, None)."""
    if messages[-1]["role"] == "assistant":
        return messages[:-1], messages[-1]["content"]
    return messages, None


def _names(rec: dict) -> str:
    return ", ".join(map(repr, rec)) or "(none)"


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."

