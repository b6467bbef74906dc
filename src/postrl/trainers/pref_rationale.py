"""Rationales of preference pairs: token ids of the rationale and of the context it is scored in.

Losses that need "rationales" (dpo_rationale: "Data-Centric Human Preference Optimization with
Rationales", arXiv 2407.14477) read rationale_logps = log pi_theta(r | x, y_w, y_l), the policy's
log-probability of the pair's rationale r (the `data.columns.rationale` column), with gradient.

Rendering (ours; the paper conditions on the prompt and both responses but its exact text layout
could not be checked here): the context is the prompt's token ids exactly as the responses see
them (chat template and generation prompt included), followed by `data.rationale_template`
rendered with the chosen and rejected texts and tokenised on its own; the rationale is tokenised
on its own and followed by EOS, like a response. With the tiny chat template and the default
template a pair reads

    <|user|>12+34=<|assistant|>46\nRejected: 47\nRationale: 12+34=46; 47 is off by 1<|end|>

where only the tokens after "Rationale: " are scored.
"""

from __future__ import annotations

import warnings

from postrl.data.loading import DataError
from postrl.data.preference import PreferenceRow, response_text


def attach_rationales(tokenizer, rows: list[PreferenceRow], examples: list, data_cfg, max_length: int,
                      where: str) -> tuple[list, int]:
    """Set `example.rationale = (context ids, rationale ids)` from each example's row; returns the
    examples kept and how many were dropped as too long (`data.long_rows: skip`)."""
    column = data_cfg.columns.rationale
    by_index = {r.index: r for r in rows}
    kept, dropped = [], 0
    for ex in examples:
        row = by_index[ex.index]
        text = row.columns.get(column)
        if not isinstance(text, str) or not text.strip():
            found = "is missing" if column not in row.columns else f"is {text!r}, not a non-empty string"
            raise DataError(f"row {row.index + 1} of {where}: column {column!r} {found}; the loss needs each pair's "
                            "rationale (why the chosen response is better) there: add the column, or set "
                            "data.columns.rationale to the column that holds it")
        if row.kind != "paired":
            raise DataError(f"row {row.index + 1} of {where}: rationales explain a chosen/rejected pair, but the row "
                            f"is {row.kind}; use paired rows (prompt, chosen, rejected, {column})")
        middle = data_cfg.rationale_template.format(chosen=response_text(row.chosen),
                                                    rejected=response_text(row.rejected))
        context = ex.prompt_ids + _ids(tokenizer, middle)
        rationale = _ids(tokenizer, text) + [tokenizer.eos_token_id]
        if len(context) + len(rationale) > max_length:
            if data_cfg.long_rows == "skip":
                dropped += 1
                continue
            raise DataError(f"row {row.index + 1} of {where}: the rationale with its context is "
                            f"{len(context) + len(rationale)} tokens, more than train.max_length={max_length}; raise "
                            "it or set data.long_rows: skip to drop such rows")
        ex.rationale = (context, rationale)
        kept.append(ex)
    if not kept:
        raise DataError(f"{where}: every rationale is longer than train.max_length={max_length}; raise it")
    if dropped:
        warnings.warn(f"{where}: dropped {dropped} rows whose rationale is longer than the token limit", stacklevel=2)
    return kept, dropped


def rationale_pairs(examples: list) -> list[tuple[list[int], list[int]]]:
    """(context ids, rationale ids) of each example, in the layout of `pref_batch.seq_logps`."""
    return [ex.rationale for ex in examples]


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
