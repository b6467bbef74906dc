"""`postrl prm`: row-level data errors, exact resume, the saved model scoring steps."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from helpers import TINY_MODEL
from postrl.cli import main
from postrl.config import ConfigError, resolve
from postrl.data.loading import DataError
from postrl.learner.process_model import ProcessRewardModel, encode_steps, first_error, split_steps
from postrl.learner.reward_model import RenderSpec
from postrl.learner.tiny import build_tokenizer
from postrl.trainers import prm
from postrl.trainers.prm_config import PrmConfig


def _cfg(tmp_path, **overrides):
    raw = {"output_dir": str(tmp_path / "run"), "model": TINY_MODEL, "data": {"limit": 48},
           "train": {"steps": 4, "batch_size": 8, "micro_batch_size": 4, "lr": 1e-3},
           "eval": {"limit": 12}, "checkpoint": {"every": 2}, "logging": {"progress": False}}
    return resolve(PrmConfig, raw, overrides, source="test config")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


GOOD = {"prompt": "1+2+3=", "completions": ["1+2=3", "3+3=6"], "labels": [True, True]}


@pytest.mark.parametrize("row, match", [
    ({"prompt": "x", "completions": ["a"]}, "row 2 of .*: no column 'labels'"),
    ({**GOOD, "labels": [True]}, "row 2 of .*: 2 steps in column 'completions' but 1 labels"),
    ({**GOOD, "labels": [1, 0]}, "row 2 of .*column 'labels' must be a list of booleans"),
    ({**GOOD, "completions": "1+2=3"}, "row 2 of .*column 'completions' must be a non-empty list"),
    ({**GOOD, "completions": ["1+2=3\n3+3=6", "x"]}, "row 2 of .*step 1 .*contains the separator"),
    ({**GOOD, "completions": ["1+2=3", " "]}, "row 2 of .*step 2 .*is empty"),
    ({**GOOD, "prompt": ""}, "row 2 of .*column 'prompt' is empty"),
])
def test_bad_rows_name_file_row_column_and_fix(tmp_path, row, match):
    src = _write_jsonl(tmp_path / "steps.jsonl", [GOOD, row])
    with pytest.raises(DataError, match=match):
        prm.load_rows(_cfg(tmp_path, **{"data.source": src, "data.limit": None}))


def test_single_file_holds_out_a_fraction_and_columns_can_be_renamed(tmp_path):
    rows = [{"q": f"{i}+1=", "steps": [f"{i}+1={i + 1}"], "ok": [i % 2 == 0]} for i in range(20)]
    src = _write_jsonl(tmp_path / "steps.jsonl", rows)
    cfg = _cfg(tmp_path, **{"data.source": src, "data.limit": None, "data.columns.prompt": "q",
                           "data.columns.completions": "steps", "data.columns.labels": "ok",
                           "eval.holdout_fraction": 0.25})
    train, held = prm.load_rows(cfg)
    assert len(train) == 15 and len(held) == 5
    assert not {p for p, _, _ in train} & {p for p, _, _ in held}


def test_config_rejects_unknown_keys_and_empty_separator(tmp_path):
    with pytest.raises(ConfigError, match="unknown key `data.sep`"):
        _cfg(tmp_path, **{"data.sep": "\n"})
    with pytest.raises(ConfigError, match="data.separator must be a non-empty string"):
        _cfg(tmp_path, **{"data.separator": ""})


def test_encode_steps_scores_each_step_on_its_last_separator_token():
    tok = build_tokenizer()  # one token per character
    ex = encode_steps(tok, "3+4=", ["3+4=7", "7*2=14"], "\n", RenderSpec(), [True, False])
    text = tok.decode(ex.ids)
    assert text == "3+4=3+4=7\n7*2=14\n"
    assert ex.positions == [9, 16] and [text[p] for p in ex.positions] == ["\n", "\n"]
    assert ex.labels == [True, False]
    assert split_steps(" a\n\n b \nc\n") == ["a", "b", "c"]
    assert first_error([True, False, False]) == 1 and first_error([True, True]) == 2


@pytest.mark.slow
def test_resume_is_exact_and_the_final_model_scores_steps(tmp_path):
    straight = prm.train(_cfg(tmp_path / "a"))
    half = _cfg(tmp_path / "b", **{"train.steps": 4})
    # stop after step 2 by training a 2-step run into the same directory, then resume to 4
    prm.train(_cfg(tmp_path / "b", **{"train.steps": 2}))
    shutil.rmtree(tmp_path / "b" / "run" / "final")
    resumed = prm.train(half, resume=True)
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "a" / "run" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "run" / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed["eval_step_accuracy"] == straight["eval_step_accuracy"]
    lines = [json.loads(x) for x in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4]
    model = ProcessRewardModel.load(straight["model_dir"])
    scores = model.score_steps(["3+4-2="], [["3+4=7", "7-2=5"]])
    assert model.separator == "\n" and len(scores[0]) == 2 and all(0 < s < 1 for s in scores[0])
    assert model.score_steps(["1="], [[]]) == [[]]
    # the saved PRM as the `prm` process reward and the `prm_score` reward: the same scores
    from types import SimpleNamespace

    from postrl.rewards import REWARDS
    from postrl.rewards.process import PROCESS_REWARDS, ProcessContext
    from postrl.rollout.batch import RolloutBatch

    tok = build_tokenizer()
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in ("3+4=7\n7-2=5", "9")]
    batch = RolloutBatch.from_token_lists([[5], [5]], ids, tok.pad_token_id)
    rows = [SimpleNamespace(prompt="3+4-2="), SimpleNamespace(prompt="9=")]
    out = PROCESS_REWARDS["prm"](ProcessContext(batch, [], rows, tok), path=straight["model_dir"],
                                 aggregate="none", device="cpu")
    assert out.step_rewards == model.score_steps(["3+4-2=", "9="], [["3+4=7", "7-2=5"], ["9"]])
    assert out.step_ends == [[5, 10], [0]] and out.token_rewards[0, 5].item() == pytest.approx(out.step_rewards[0][0])
    assert REWARDS["prm_score"](["9="], ["9"], path=straight["model_dir"], aggregate="last", device="cpu") == \
        [pytest.approx(out.step_rewards[1][0])]


def test_cli_runs_prm(tmp_path):
    config = tmp_path / "prm.yaml"
    config.write_text("model:\n  name_or_path: tiny\n  tiny: {hidden_size: 32, num_layers: 1, num_heads: 2, "
                      "num_kv_heads: 1, intermediate_size: 64}\ndata: {limit: 16}\n"
                      "train: {steps: 1, batch_size: 4, micro_batch_size: 4}\neval: {limit: 4}\n"
                      "logging: {progress: false}\n")
    assert main(["prm", str(config), "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["prm_steps"] == 1 and 0 <= summary["eval_step_accuracy"] <= 1
    assert (tmp_path / "run" / "final" / "config.json").exists()


def test_loading_a_directory_without_a_step_head_is_an_error(tmp_path):
    from postrl.learner.tiny import build_model

    tok = build_tokenizer()
    build_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64) \
        .save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="no trained step head"):
        ProcessRewardModel.load(tmp_path / "lm")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        ProcessRewardModel.load(tmp_path / "missing")


@pytest.mark.slow
def test_prm_reaches_090_held_out_step_accuracy_on_the_built_in_step_data(tmp_path):
    # task:arithmetic_steps with carry slips (a result off by 10 leaves 0..9): 60 steps of 32 chains
    # from scratch; measured 1.0 step and first-error accuracy on 300 held-out chains (docs/process_rewards.md)
    cfg = resolve(PrmConfig, {"output_dir": str(tmp_path / "run"),
                              "model": {"tiny": {"hidden_size": 64, "num_layers": 2, "num_heads": 4,
                                                 "num_kv_heads": 2, "intermediate_size": 256}},
                              "train": {"steps": 60, "batch_size": 32, "micro_batch_size": 32, "lr": 3e-3,
                                        "warmup_steps": 10},
                              "eval": {"every": 30, "limit": 300}, "checkpoint": {"every": 60},
                              "logging": {"progress": False}})
    summary = prm.train(cfg)
    assert summary["eval_rows"] == 300
    assert summary["eval_step_accuracy"] >= 0.9, summary
    assert summary["eval_first_error_accuracy"] >= 0.8, summary
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "eval/step_accuracy" in m] == [30, 60]
    assert lines[-1]["loss"] < lines[0]["loss"]
