"""Encoding preference rows into token ids, and matching data formats to losses."""

import pytest

from postrl.config import PrefDataSection
from postrl.data.loading import DataError
from postrl.data.preference import PreferenceRow
from postrl.learner.tiny import build_tokenizer
from postrl.trainers.pref_data import accepted_kinds, encode_examples, fit_rows

TOK = build_tokenizer()
USER = [{"role": "user", "content": "2+2="}]


def ids(text):
    return TOK(text, add_special_tokens=False)["input_ids"]


def test_chat_prompt_is_templated_and_responses_end_in_eos():
    [ex], dropped = encode_examples(TOK, [PreferenceRow(USER, chosen="4", rejected="15")], PrefDataSection(), 64)
    assert ex.prompt_ids == ids("<|user|>2+2=<|assistant|>") and dropped == 0
    assert ex.responses == [ids("4") + [TOK.eos_token_id], ids("15") + [TOK.eos_token_id]]
    assert ex.kind == "paired"


def test_ranked_and_unpaired_examples():
    rows = [PreferenceRow("a", responses=["1", [{"role": "assistant", "content": "22"}]], scores=[1.0, 0.0])]
    [ex], _ = encode_examples(TOK, rows, PrefDataSection(), 64)
    assert ex.prompt_ids == ids("a") and [len(r) for r in ex.responses] == [2, 3] and ex.scores == [1.0, 0.0]
    [ex], _ = encode_examples(TOK, [PreferenceRow("a", chosen="1", label=False)], PrefDataSection(), 64)
    assert ex.kind == "unpaired" and ex.label is False and len(ex.responses) == 1


def test_long_rows_are_an_error_or_dropped_and_counted():
    rows = [PreferenceRow("a", chosen="1", rejected="2", index=0),
            PreferenceRow("a", chosen="1" * 20, rejected="2", index=1)]
    with pytest.raises(DataError, match=r"row 2 of the data: 22 tokens, more than train.max_length=10 \(prompt \+ "
                                        r"response\); raise the limit or set data.long_rows: skip"):
        encode_examples(TOK, rows, PrefDataSection(), 10)
    with pytest.warns(UserWarning, match="dropped 1 of 2 rows"):
        out, dropped = encode_examples(TOK, rows, PrefDataSection(long_rows="skip"), 10)
    assert len(out) == 1 and dropped == 1


def test_dpo_takes_pairs_only():
    ok = accepted_kinds("dpo")
    assert ok["paired"] is None and ok["unpaired"] and ok["ranked"]


def test_pairs_for_a_labels_only_loss_are_split(monkeypatch):
    from postrl.algorithms import PREFERENCE_LOSSES
    from postrl.algorithms.policy_losses import LossOutput
    from postrl.algorithms.preference import require
    from postrl.registry import Entry

    def labels_only(inp):
        require(inp, "labels_only", "labels")
        return LossOutput(-inp.chosen_logps)

    monkeypatch.setitem(PREFERENCE_LOSSES._entries, "test_labels",
                        Entry("test_labels", labels_only, "test", None, "test", {}, ()))
    rows, note = fit_rows([PreferenceRow("p", chosen="1", rejected="2")], "test_labels", {}, "data.source=x")
    assert [(r.chosen, r.label) for r in rows] == [("1", True), ("2", False)]
    assert "each pair of data.source=x became a desirable (chosen) and an undesirable (rejected) example" in note
    rows, note = fit_rows([PreferenceRow("p", chosen="1", rejected="2")], "dpo", {}, "x")
    assert rows[0].kind == "paired" and note == ""
