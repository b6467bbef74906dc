"""Rationales in `postrl pref` (trainers/pref_rationale.py): the token layout by hand, the log-prob
the loss receives, a 2-step dpo_rationale run, and the missing-column error."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from postrl.algorithms.policy_losses import LossOutput
from postrl.config import PrefDataSection
from postrl.data.loading import DataError
from postrl.data.preference import load_preference_rows
from postrl.learner.tiny import build_tokenizer
from postrl.trainers import pref
from postrl.trainers.pref_data import encode_examples
from postrl.trainers.pref_rationale import attach_rationales

from trainers.test_pref import _init_weights, _model, config, register

ROW = {"prompt": [{"role": "user", "content": "1+2="}], "chosen": "3", "rejected": "4",
       "rationale": "1+2=3; 4 is off by 1"}


def _encode(tmp_path, rows, **data):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = PrefDataSection(source=str(path), **data)
    tok = build_tokenizer()
    loaded = load_preference_rows(cfg, "train")
    exs, _ = encode_examples(tok, loaded, cfg, 1024, "d.jsonl")
    return tok, cfg, loaded, exs


def test_context_is_prompt_then_both_responses_and_the_rationale_ends_in_eos(tmp_path):
    tok, cfg, rows, exs = _encode(tmp_path, [ROW])
    kept, dropped = attach_rationales(tok, rows, exs, cfg, 1024, "d.jsonl")
    context, rationale = kept[0].rationale
    # the prompt ids are exactly the responses' (chat template + generation prompt), then the template
    assert context[:len(exs[0].prompt_ids)] == exs[0].prompt_ids
    assert tok.decode(context) == "<|user|>1+2=<|assistant|>3\nRejected: 4\nRationale: "
    assert tok.decode(rationale) == "1+2=3; 4 is off by 1<|end|>" and rationale[-1] == tok.eos_token_id
    assert len(rationale) == len("1+2=3; 4 is off by 1") + 1 and dropped == 0  # one token per character + EOS
    # another template and column name
    tok, cfg, rows, exs = _encode(tmp_path, [{**ROW, "why": ROW["rationale"]}],
                                  rationale_template="[{rejected}<{chosen}] ", columns={"rationale": "why"})
    assert tok.decode(attach_rationales(tok, rows, exs, cfg, 1024, "d.jsonl")[0][0].rationale[0]) == \
        "<|user|>1+2=<|assistant|>[4<3] "


def test_missing_rationale_and_long_rows_name_the_column_and_the_fix(tmp_path):
    tok, cfg, rows, exs = _encode(tmp_path, [ROW, {k: v for k, v in ROW.items() if k != "rationale"}])
    with pytest.raises(DataError, match="row 2 of d.jsonl: column 'rationale' is missing; .*data.columns.rationale"):
        attach_rationales(tok, rows, exs, cfg, 1024, "d.jsonl")
    tok, cfg, rows, exs = _encode(tmp_path, [ROW])
    # context: <|user|> + "1+2=" + <|assistant|> + "3\nRejected: 4\nRationale: " = 1 + 4 + 1 + 25 = 31 tokens;
    # rationale: 20 characters + EOS = 21; 52 in all. "short" + EOS is 6: 37 <= 40
    with pytest.raises(DataError, match=r"row 1 of d.jsonl: the rationale with its context is 52 tokens, more than "
                                        r"train.max_length=40; .*data.long_rows: skip"):
        attach_rationales(tok, rows, exs, cfg, 40, "d.jsonl")
    tok, cfg, rows, exs = _encode(tmp_path, [ROW, {**ROW, "rationale": "short"}], long_rows="skip")
    kept, dropped = attach_rationales(tok, rows, exs, cfg, 40, "d.jsonl")
    assert dropped == 1 and tok.decode(kept[0].rationale[1]) == "short<|end|>"


def test_rationale_logps_is_the_policy_log_prob_of_the_rationale_tokens_with_gradient(tmp_path, monkeypatch):
    seen = []

    def spy(inp):
        seen.append(inp)
        return LossOutput(-inp.rationale_logps)

    register(monkeypatch, "test_rationale", spy, ("rationales",))
    cfg = config(tmp_path, **{"loss.name": "test_rationale", "data.source": "task:arithmetic_rationale_pairs"})
    p = pref.Parts(cfg, torch.device("cpu"), *_model(cfg))
    pref.load_data(p)
    pref.train_step(p, [0, 1, 2, 3, 4])  # micro-batches of 4 and 1
    got = torch.cat([x.rationale_logps for x in seen if x.chosen_logps.requires_grad])  # not the format probe's
    assert got.requires_grad and got.shape == (5,)
    # by hand: one forward of context + rationale, log-softmax, the rationale tokens' log-probs summed
    for k, ex in enumerate(p.examples["train"][:5]):
        context, rationale = ex.rationale
        with torch.no_grad():
            logits = p.model(torch.tensor([context + rationale])).logits[0].float()
        logp = torch.log_softmax(logits[len(context) - 1:-1], -1).gather(-1, torch.tensor(rationale)[:, None]).sum()
        assert float(got[k].detach()) == pytest.approx(float(logp), abs=1e-4)


def test_dpo_rationale_trains_two_steps_on_the_built_in_rationale_pairs(tmp_path):
    cfg = config(tmp_path, **{"loss.name": "dpo_rationale", "data.source": "task:arithmetic_rationale_pairs"})
    before = load_file(str(_init_weights(tmp_path, cfg)))
    summary = pref.train(cfg)
    after = load_file(str(cfg.run_dir / "final" / "model.safetensors"))
    assert math.isfinite(summary["final_loss"]) and any(not torch.equal(before[k], after[k]) for k in before)
    step1 = json.loads((cfg.run_dir / "metrics.jsonl").read_text().splitlines()[1])
    # at pi = pi_ref the DPO term is log 2: the loss is log 2 - gamma (0.1) * the rationale's log-prob
    assert step1["step"] == 1 and step1["loss"] == pytest.approx(math.log(2) - 0.1 * step1["rationale/logps"], rel=1e-5)


def test_a_rationale_loss_on_data_without_rationales_says_which_column_is_missing(tmp_path):
    with pytest.raises(DataError, match="column 'rationale' is missing; the loss needs each pair's rationale .* set "
                                        "data.columns.rationale"):
        pref.train(config(tmp_path, **{"loss.name": "dpo_rationale"}))
