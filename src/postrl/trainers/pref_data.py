"""Preference rows -> token ids, and which data formats a preference loss can train on.

`encode_examples` renders each prompt with the chat template as SFT does and tokenises every
response on its own followed by EOS; from then on the trainer works on these ids only. An example
holds 2 responses (paired: chosen, rejected), 1 (unpaired: the completion, plus another
example's completion as its KTO reference-point pair when the loss needs "kto_kl") or K (ranked).

Which format a loss takes is not declared anywhere: `accepted_kinds` calls the loss once on
two-row dummy inputs of each format and keeps those it does not reject (losses raise a
ValueError through `preference.require` for a field they lack). `fit_rows` then applies the one
conversion postrl makes by itself, paired -> unpaired for a loss that takes only labelled
completions (TRL's `unpair_preference_dataset`: chosen desirable, rejected undesirable); every
other mismatch (ranked data for a pairwise loss, pairs for a listwise one) is an error naming the
losses that do fit.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch

from postrl.data.chat import render_prompt
from postrl.data.loading import DataError
from postrl.data.preference import PreferenceRow, data_kind, response_text, unpair

KINDS = ("paired", "unpaired", "ranked")


@dataclass
class PrefExample:
    """One encoded preference example (token ids, no padding)."""

    prompt_ids: list[int]
    responses: list[list[int]]
    """paired: [chosen, rejected]; unpaired: [completion]; ranked: K responses. Each ends in EOS."""
    kind: str
    label: bool | None = None
    scores: list[float] | None = None
    kl_response: list[int] | None = None
    """needs "kto_kl": another example's completion, scored after this prompt (the KTO reference point)."""
    margin: float | None = None
    """needs "margins": another objective's reward margin of the pair (the `data.columns.margin` column)."""
    index: int = 0
    rationale: tuple[list[int], list[int]] | None = None
    """needs "rationales": (context ids: prompt + both responses, rationale ids + EOS); `pref_rationale.py`."""


SUPPORTED_NEEDS = ("reference", "token_logps", "kto_kl", "margins", "online_kl", "rationales")
"""The preference-loss needs `postrl pref` provides (registries.PREFERENCE_LOSSES lists them all)."""


def encode_examples(tokenizer, rows: list[PreferenceRow], data_cfg, max_length: int,
                    where: str = "the data", margin_column: str | None = None) -> tuple[list[PrefExample], int]:
    """Encoded examples and the number of rows dropped as too long (`data.long_rows: skip`).
    `margin_column`: read each row's reward margin from this column (losses that need "margins")."""
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token, so a response cannot end; use a tokenizer with eos_token")
    prompts = _tokenize(tokenizer, [render_prompt(tokenizer, r.prompt, data_cfg) for r in rows])
    texts = [[response_text(x) for x in _responses(r)] for r in rows]
    flat = _tokenize(tokenizer, [t for ts in texts for t in ts])
    out, dropped, k = [], 0, 0
    for i, (row, p) in enumerate(zip(rows, prompts)):
        resp = [ids + [tokenizer.eos_token_id] for ids in flat[k:k + len(texts[i])]]
        k += len(resp)
        longest = len(p) + max(len(r) for r in resp)
        too_long = (longest > max_length, len(p) > data_cfg.max_prompt_tokens)
        if any(too_long):
            policy = data_cfg.long_rows if too_long[0] else data_cfg.long_prompts
            if policy == "skip":
                dropped += 1
                continue
            limit = (f"train.max_length={max_length} (prompt + response)" if too_long[0]
                     else f"data.max_prompt_tokens={data_cfg.max_prompt_tokens}")
            key = "data.long_rows" if too_long[0] else "data.long_prompts"
            raise DataError(f"row {row.index + 1} of {where}: {longest if too_long[0] else len(p)} tokens, more than "
                            f"{limit}; raise the limit or set {key}: skip to drop such rows")
        out.append(PrefExample(p, resp, row.kind, row.label, row.scores, index=row.index,
                               margin=_margin(row, margin_column, where) if margin_column else None))
    if not out:
        raise DataError(f"{where}: every row is longer than the token limits; raise train.max_length")
    if dropped:
        warnings.warn(f"{where}: dropped {dropped} of {len(rows)} rows longer than the token limits", stacklevel=2)
    return out, dropped


def _margin(row: PreferenceRow, column: str, where: str) -> float:
    value = row.columns.get(column)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        found = "is missing" if column not in row.columns else f"is {value!r}, not a number"
        raise DataError(f"row {row.index + 1} of {where}: column {column!r} {found}; the loss needs each pair's "
                        "reward margin from another objective there (set data.columns.margin)")
    return float(value)


def _responses(row: PreferenceRow) -> list:
    if row.kind == "ranked":
        return row.responses
    return [row.chosen] if row.kind == "unpaired" else [row.chosen, row.rejected]


def _tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


def add_kl_pairs(examples: list[PrefExample]) -> None:
    """Give each unpaired example the completion of the next example with another prompt
    (cyclically) as its mismatched KTO pair. TRL shifts completions by one inside each batch when it
    builds its KL dataset; here the shift runs over the whole (fixed-order) dataset, so the pairs,
    and their cached reference log-probs, do not depend on how batches are drawn."""
    n = len(examples)
    for i, ex in enumerate(examples):
        j = next(((i + s) % n for s in range(1, n) if examples[(i + s) % n].prompt_ids != ex.prompt_ids), None)
        if j is None:
            raise DataError("the KTO reference point pairs prompts with other prompts' completions, but every "
                            "row has the same prompt; add rows with other prompts")
        ex.kl_response = examples[j].responses[0]


# --------------------------------------------------------------------------- loss <-> data format
def _dummy_inputs(kind: str):
    """Two-row inputs of one data format, every optional field of that format filled."""
    import dataclasses

    from postrl.algorithms.preference import PrefInputs

    g = torch.Generator().manual_seed(0)

    def logps(*shape):
        return -1.0 - torch.rand(*shape, generator=g)

    B, T, K = 2, 3, 3
    mask = torch.ones(B, T)
    base = dict(chosen_logps=logps(B), chosen_lengths=torch.full((B,), float(T)), chosen_ref_logps=logps(B),
                chosen_token_logps=logps(B, T), chosen_token_mask=mask, chosen_token_ref_logps=logps(B, T))
    if kind == "paired":
        extra = dict(rejected_logps=logps(B), rejected_lengths=torch.full((B,), float(T)),
                     rejected_ref_logps=logps(B), rejected_token_logps=logps(B, T), rejected_token_mask=mask,
                     rejected_token_ref_logps=logps(B, T), margins=torch.tensor([0.5, -0.5]),
                     rationale_logps=logps(B), kl_logps=logps(B), kl_ref_logps=logps(B))
    elif kind == "unpaired":
        extra = dict(labels=torch.tensor([1.0, 0.0]), kl_logps=logps(B), kl_ref_logps=logps(B))
    else:
        extra = dict(list_logps=logps(B, K), list_ref_logps=logps(B, K), list_lengths=torch.full((B, K), float(T)),
                     scores=torch.tensor([[2.0, 1.0, 0.0]] * B))
    known = {f.name for f in dataclasses.fields(PrefInputs)}
    return PrefInputs(**{k: v for k, v in {**base, **extra}.items() if k in known})


def accepted_kinds(name: str, kwargs: dict | None = None) -> dict[str, str | None]:
    """kind -> None when loss `name` trains on that data format, else its error message."""
    from postrl.algorithms import PREFERENCE_LOSSES

    key = tuple(sorted((kwargs or {}).items(), key=lambda kv: kv[0]))
    try:
        return dict(_accepted(PREFERENCE_LOSSES[name], key))
    except TypeError:  # unhashable kwargs (a list value): probe without the cache
        return dict(_accepted.__wrapped__(PREFERENCE_LOSSES[name], key))


@functools.lru_cache(maxsize=None)
def _accepted(fn, kwargs: tuple) -> tuple:
    out = []
    for kind in KINDS:
        try:
            fn(_dummy_inputs(kind), **dict(kwargs))
            out.append((kind, None))
        except Exception as e:  # noqa: BLE001 - any failure means "not this format"
            out.append((kind, f"{type(e).__name__}: {e}"))
    return tuple(out)


def losses_for(kind: str) -> list[str]:
    from postrl.algorithms import PREFERENCE_LOSSES

    return [n for n in PREFERENCE_LOSSES.names() if accepted_kinds(n)[kind] is None]


def fit_rows(rows: list[PreferenceRow], name: str, kwargs: dict, where: str) -> tuple[list[PreferenceRow], str]:
    """`rows` in a format loss `name` trains on, and a note of any conversion ("" if none)."""
    kind, ok = data_kind(rows), accepted_kinds(name, kwargs)
    if ok[kind] is None:
        return rows, ""
    if kind == "paired" and ok["unpaired"] is None:
        return unpair(rows), (f"loss {name!r} takes labelled completions: each pair of {where} became a desirable "
                              "(chosen) and an undesirable (rejected) example")
    takes = [k for k in KINDS if ok[k] is None]
    if not takes:
        raise ValueError(f"loss.name={name!r} with loss.kwargs={kwargs} fails on every data format "
                         f"(on {kind} data: {ok[kind]}); check loss.kwargs")
    raise DataError(f"{where} holds {kind} rows, but loss.name={name!r} trains on {' or '.join(takes)} data "
                    f"(on {kind} rows it says: {ok[kind]}). Use a loss for {kind} data "
                    f"({', '.join(losses_for(kind)) or 'none registered'}) or data of the right format "
                    "(docs/preference.md, 'Data formats')")


def check_task_fits(cfg) -> None:
    """Config-time check for built-in `task:` data: its format suits `cfg.loss` (2 rows are loaded)."""
    from postrl.data.preference import load_preference_rows

    rows = load_preference_rows(cfg.data.model_copy(update={"limit": 2}), cfg.data.split)
    fit_rows(rows, cfg.loss.name, cfg.loss.kwargs, f"data.source={cfg.data.source}")
