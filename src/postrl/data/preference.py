"""Preference data: any source -> checked `PreferenceRow`s (paired, unpaired or ranked).

Three formats, recognised per row by their columns (names set in `data.columns`):
  paired    prompt + chosen + rejected (TRL's preference format). Without a prompt column, or
            with a prompt of another kind than the responses (a string prompt beside message
            lists that start with a user turn), the prompt is the longest common prefix of
            chosen and rejected (TRL's "implicit prompt": for message lists the shared leading
            messages; for strings the shared leading characters, minus a trailing space). A
            chat prompt with string responses is fine: the response is the assistant's text.
  unpaired  prompt + completion + label (TRL's KTO format); the completion goes in `chosen`.
  ranked    prompt + responses + scores (LiPO): >= 2 responses, higher score is better.
A response is a string or a list with one assistant message. Every row of a source must have one
format and one kind (all plain text or all chat messages); every problem is a `DataError` naming
the source, the 1-based row, the column and the fix. Sources are those of `loading.load_records`
(built-in `task:NAME`, .jsonl/.json/.parquet/.csv, a `datasets` directory, a hub name).
"""

from __future__ import annotations

import difflib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from postrl.config import DataSection
from postrl.data.loading import DataError, _check_prompt, _limited_records, _names, _short, is_single_file

Kind = Literal["paired", "unpaired", "ranked"]


@dataclass
class PreferenceRow:
    """One preference example. Exactly one of the three formats is filled in."""

    prompt: str | list[dict]
    """Plain text, or chat messages (the system prompt already prepended, as for RL prompts)."""
    chosen: str | list[dict] | None = None
    """Paired: the preferred response. Unpaired: the completion that `label` judges."""
    rejected: str | list[dict] | None = None
    """Paired: the dispreferred response; None otherwise."""
    label: bool | None = None
    """Unpaired only: True desirable, False undesirable."""
    responses: list[str | list[dict]] | None = None
    """Ranked only: K >= 2 responses."""
    scores: list[float] | None = None
    """Ranked only: one score per response, higher is better."""
    columns: dict[str, Any] = field(default_factory=dict)
    """The row's other columns (not the prompt or response ones)."""
    index: int = 0
    """Row number in the source (0-based; messages show it 1-based)."""

    @property
    def kind(self) -> Kind:
        if self.responses is not None:
            return "ranked"
        return "unpaired" if self.label is not None else "paired"


def load_preference_rows(data_cfg: DataSection, split: str | None = None,
                         source: str | None = None) -> list[PreferenceRow]:
    """Load `source` (default `data_cfg.source`) split `split` (default `data_cfg.split`) as
    checked preference rows.

    `load_preference_rows(cfg, cfg.eval_split)` loads the held-out rows: from `data.eval_source`
    when set, else `data.source` with that split. A single file has no held-out part, so asking
    it for the eval split without `data.eval_source` returns []. `data_cfg` is a `DataSection`
    or the preference section (`PrefDataSection`: extra column names, `identical_pairs`).
    """
    cfg = data_cfg
    split = split or cfg.split
    if source is None:
        source = cfg.source
        if split == cfg.eval_split and split != cfg.split:
            source = cfg.eval_source or cfg.source
            if cfg.eval_source is None and is_single_file(source):
                return []
    records, where = _limited_records(cfg, split, source)
    if source.lower().endswith(".csv"):
        records = [_csv_text(rec, cfg) for rec in records]
    rows = [_row(i, rec, cfg, where) for i, rec in enumerate(records)]
    _check_consistent(rows, where)
    same = [r for r in rows if _identical(r)]
    if same and getattr(cfg, "identical_pairs", "error") == "error":
        raise DataError(f"row {same[0].index + 1} of {where}: chosen and rejected are the same response "
                        f"({_short(response_text(same[0].chosen))}), which teaches nothing; fix the row, or set "
                        "data.identical_pairs: skip to drop such rows")
    if same:
        kept = [r for r in rows if not _identical(r)]
        warnings.warn(f"{where}: dropped {len(same)} of {len(rows)} rows whose chosen and rejected responses "
                      "are identical (data.identical_pairs: skip)", stacklevel=2)
        if not kept:
            raise DataError(f"{where}: every row has identical chosen and rejected responses; nothing to learn")
        rows = kept
    return rows


def data_kind(rows: list[PreferenceRow]) -> Kind:
    """The format of `rows` (checked to be one format by `load_preference_rows`)."""
    return rows[0].kind


def unpair(rows: list[PreferenceRow]) -> list[PreferenceRow]:
    """Paired rows -> unpaired rows: chosen labelled desirable, rejected undesirable (TRL's
    `unpair_preference_dataset`), so a KTO-style loss can train on paired data."""
    out = []
    for r in rows:
        out.append(PreferenceRow(r.prompt, chosen=r.chosen, label=True, columns=r.columns, index=r.index))
        out.append(PreferenceRow(r.prompt, chosen=r.rejected, label=False, columns=r.columns, index=r.index))
    return out


def response_text(response: str | list[dict]) -> str:
    """The text of a response (a string, or the content of its one assistant message)."""
    return response if isinstance(response, str) else response[0]["content"]


# ---------------------------------------------------------------------------------------- rows
def _col(cfg: DataSection, name: str) -> str:
    return getattr(cfg.columns, name, name)


def _csv_text(rec: dict, cfg: DataSection) -> dict:
    """CSV cells come back typed by pyarrow's inference: a column of digits (say answers "4", "5")
    becomes numbers. Prompt and response columns are text, so numbers there are turned back."""
    text = {_col(cfg, k) for k in ("prompt", "chosen", "rejected", "completion")}
    return {k: str(v) if k in text and isinstance(v, (int, float)) and not isinstance(v, bool) else v
            for k, v in rec.items()}


def _row(i: int, rec: dict, cfg: DataSection, where: str) -> PreferenceRow:
    at = f"row {i + 1} of {where}"
    c = {k: _col(cfg, k) for k in ("prompt", "chosen", "rejected", "completion", "label", "responses", "scores")}
    if c["chosen"] in rec or c["rejected"] in rec:
        for k in ("chosen", "rejected"):
            if c[k] not in rec:
                raise _missing(rec, c[k], f"data.columns.{k}", at, "paired rows need both chosen and rejected")
        row = _paired(rec, c, at)
    elif c["completion"] in rec or c["label"] in rec:
        for k in ("completion", "label"):
            if c[k] not in rec:
                raise _missing(rec, c[k], f"data.columns.{k}", at, "unpaired rows need a completion and a label")
        row = PreferenceRow(_prompt(rec, c, at), chosen=_response(rec[c["completion"]], c["completion"], at),
                            label=_label(rec[c["label"]], c["label"], at))
    elif c["responses"] in rec or c["scores"] in rec:
        for k in ("responses", "scores"):
            if c[k] not in rec:
                raise _missing(rec, c[k], f"data.columns.{k}", at, "ranked rows need responses and scores")
        responses, scores = _ranked(rec[c["responses"]], rec[c["scores"]], c, at)
        row = PreferenceRow(_prompt(rec, c, at), responses=responses, scores=scores)
    else:
        raise DataError(f"{at}: no preference columns: expected {c['prompt']!r} with {c['chosen']!r} + "
                        f"{c['rejected']!r} (paired), {c['completion']!r} + {c['label']!r} (unpaired) or "
                        f"{c['responses']!r} + {c['scores']!r} (ranked); available columns: {_names(rec)}; "
                        "rename the columns or set data.columns.chosen / .rejected / ...")
    row.index = i
    row.columns = {k: v for k, v in rec.items() if k not in c.values()}
    if isinstance(row.prompt, list) and cfg.system_prompt and row.prompt[0]["role"] != "system":
        row.prompt = [{"role": "system", "content": cfg.system_prompt}] + row.prompt
    return row


def _missing(rec: dict, name: str, key: str, at: str, why: str) -> DataError:
    close = difflib.get_close_matches(name, [str(k) for k in rec], n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}? set {key}: {close[0]})" if close else f"; set {key}"
    return DataError(f"{at}: no column {name!r}{hint}; {why}; available columns: {_names(rec)}")


def _prompt(rec: dict, c: dict, at: str) -> str | list[dict]:
    if c["prompt"] not in rec:
        raise _missing(rec, c["prompt"], "data.columns.prompt", at, "the prompt is required")
    return _check_prompt(rec[c["prompt"]], c["prompt"], at)


def _paired(rec: dict, c: dict, at: str) -> PreferenceRow:
    chosen, rejected = rec[c["chosen"]], rec[c["rejected"]]
    prompt = rec.get(c["prompt"])
    # a string prompt beside full conversations (some hub sets carry both): the conversations win
    full = [v for v in (chosen, rejected) if isinstance(v, list) and v and isinstance(v[0], dict)
            and v[0].get("role") != "assistant"]
    implicit = prompt is None or (isinstance(prompt, str) and bool(full))
    if implicit:  # TRL's maybe_extract_prompt: the shared prefix of chosen and rejected
        for name, value in ((c["chosen"], chosen), (c["rejected"], rejected)):
            _check_prompt(value, name, at)
        if isinstance(chosen, list) != isinstance(rejected, list):
            raise DataError(f"{at}: column {c['chosen']!r} and {c['rejected']!r} must both be strings or both "
                            "message lists")
        prompt, chosen, rejected = _extract_prompt(chosen, rejected)
        if not prompt or (isinstance(prompt, str) and not prompt.strip()):
            raise DataError(f"{at}: no column {c['prompt']!r}, and {c['chosen']!r} and {c['rejected']!r} share no "
                            "leading text to take as the prompt; add a prompt column (or set data.columns.prompt)")
    else:
        prompt = _check_prompt(prompt, c["prompt"], at)
    return PreferenceRow(prompt, chosen=_response(chosen, c["chosen"], at),
                         rejected=_response(rejected, c["rejected"], at))


def _extract_prompt(chosen, rejected):
    n = min(len(chosen), len(rejected))
    idx = next((k for k in range(n) if chosen[k] != rejected[k]), n)
    if isinstance(chosen, str) and 0 < idx and chosen[idx - 1] == " ":
        idx -= 1  # TRL keeps the space with the responses
    return chosen[:idx], chosen[idx:], rejected[idx:]


def _response(value: Any, name: str, at: str) -> str | list[dict]:
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{at}: column {name!r} is empty; remove the row or fill it in")
        return value
    if isinstance(value, list):
        if not value:
            raise DataError(f"{at}: column {name!r} is empty (no message left after the prompt); remove the row "
                            "or fill it in")
        _check_prompt(value, name, at, messages_only=True)
        if len(value) != 1 or value[0]["role"] != "assistant":
            roles = [m["role"] for m in value]
            raise DataError(f"{at}: column {name!r} must hold one assistant message (the response), got roles "
                            f"{roles}; put earlier turns in the prompt column")
        return value
    shown = "null" if value is None else f"type {type(value).__name__}"
    raise DataError(f"{at}: column {name!r} is {shown}; expected a non-empty string or a list with one "
                    "assistant message {'role': 'assistant', 'content': ...}")


def _label(value: Any, name: str, at: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise DataError(f"{at}: column {name!r} = {_short(value)} is not a label; use true/false (or 1/0): "
                    "true for a desirable completion")


def _ranked(responses: Any, scores: Any, c: dict, at: str) -> tuple[list, list[float]]:
    if not isinstance(responses, list) or len(responses) < 2:
        raise DataError(f"{at}: column {c['responses']!r} must be a list of at least 2 responses, got "
                        f"{_short(responses)}")
    if not isinstance(scores, list) or len(scores) != len(responses):
        raise DataError(f"{at}: column {c['scores']!r} must be a list of one number per response "
                        f"({len(responses)}), got {_short(scores)}")
    out = [_response(r, f"{c['responses']}[{k}]", at) for k, r in enumerate(responses)]
    for k, s in enumerate(scores):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise DataError(f"{at}: column {c['scores']!r} item {k}: {s!r} is not a finite number")
    if len(set(scores)) == 1:
        raise DataError(f"{at}: every response has score {scores[0]}, so the row ranks nothing; remove the row "
                        "or give distinct scores")
    return out, [float(s) for s in scores]


# ------------------------------------------------------------------------------------- checks
def _is_chat(row: PreferenceRow) -> bool:
    return isinstance(row.prompt, list)


def _identical(row: PreferenceRow) -> bool:
    return row.kind == "paired" and response_text(row.chosen) == response_text(row.rejected)


def _check_consistent(rows: list[PreferenceRow], where: str) -> None:
    first = rows[0]
    for r in rows:
        at = f"row {r.index + 1} of {where}"
        if r.kind != first.kind:
            raise DataError(f"{at}: {'an' if r.kind == 'unpaired' else 'a'} {r.kind} row, but row "
                            f"{first.index + 1} is {first.kind}; every row of a "
                            "source must have one format (paired, unpaired or ranked)")
        if _is_chat(r) != _is_chat(first):
            kinds = ("chat messages", "plain text")
            raise DataError(f"{at}: the prompt is {kinds[not _is_chat(r)]} but row {first.index + 1}'s is "
                            f"{kinds[not _is_chat(first)]}; convert the rows to one kind")
