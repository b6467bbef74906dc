"""`postrl rm` end to end on the tiny model: held-out pair accuracy, exact resume, HF-loadable output,
data errors; and the trained RM as the reward of a `postrl train` run."""

import json
import shutil

import pytest
import torch
from helpers import TINY_MODEL, tiny_rl_config

from postrl.cli import main
from postrl.config import ConfigError, RMConfig, resolve
from postrl.data.loading import DataError
from postrl.data.preference import load_preference_rows
from postrl.learner.checkpoint import list_checkpoints
from postrl.trainers import rl, rm

pytestmark = pytest.mark.slow


def _cfg(tmp_path, **overrides):
    raw = {"name": "rm", "output_dir": str(tmp_path / "run"), "model": TINY_MODEL,
           "data": {"source": "task:arithmetic_verbose_pairs", "task_kwargs": {"level": 1}},
           "train": {"steps": 4, "batch_size": 8, "micro_batch_size": 4, "lr": 1e-3},
           "eval": {"limit": 20}, "checkpoint": {"every": 2}, "logging": {"progress": False}}
    return resolve(RMConfig, raw, overrides, source="test config")


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_rm_cli_reaches_090_held_out_pair_accuracy(tmp_path):
    # The issue's acceptance test, on the built-in concise-vs-verbose pairs ("46" over "The answer
    # is 46."). The correct-vs-wrong pairs (`task:arithmetic_pairs`) are not learnable by the tiny
    # model in this budget: from scratch, or from a 70 s SFT warm start, held-out accuracy stays at
    # chance for 600-2000 steps (docs/reward_models.md).
    config = tmp_path / "rm.yaml"
    config.write_text("model:\n  name_or_path: tiny\n  tiny: {hidden_size: 32, num_layers: 2, num_heads: 2, "
                      "num_kv_heads: 1, intermediate_size: 64}\n"
                      "data:\n  source: task:arithmetic_verbose_pairs\n  task_kwargs: {level: 2, limit: 256}\n"
                      "train: {steps: 20, batch_size: 16, micro_batch_size: 16, warmup_steps: 2}\n"
                      "eval: {every: 10, limit: 200}\nlogging: {progress: false}\n")
    run = tmp_path / "run"
    assert main(["rm", str(config), "--out", str(run), "--set", "train.lr=1e-3"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_pairs"] == 200 and summary["eval_accuracy"] >= 0.9, summary
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, 21))
    for key in ("loss", "bt_loss", "accuracy", "margin", "rewards/chosen", "rewards/rejected", "grad_norm", "lr"):
        assert key in lines[0], key
    assert [m["step"] for m in lines if "eval/accuracy" in m] == [10, 20]
    assert lines[-1]["loss"] < lines[0]["loss"]


def test_final_model_and_checkpoints_load_with_transformers(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    summary = rm.train(_cfg(tmp_path))
    for path in [tmp_path / "run" / "final", *list_checkpoints(tmp_path / "run")]:
        model = AutoModelForSequenceClassification.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    saved = model.config.postrl_rm  # the last checkpoint carries the rendering and the held-out statistics
    assert saved["chat_template"] == "auto" and saved["max_tokens"] == 1024
    assert saved["reward_mean"] == pytest.approx(summary["reward_mean"]) and saved["reward_std"] > 0


def test_resume_after_a_stop_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    cfg = _cfg(tmp_path, **{"checkpoint.every": 1, "checkpoint.keep_last": 4, "eval.every": 2})
    rm.train(cfg)
    full = _weights(tmp_path / "run" / "final")
    killed = tmp_path / "killed"  # a run stopped after step 2 holds checkpoints up to step 2 only
    shutil.copytree(cfg.run_dir, killed)
    shutil.rmtree(killed / "final")
    for ckpt in list_checkpoints(killed)[2:]:
        shutil.rmtree(ckpt)
    rm.train(cfg.model_copy(update={"output_dir": str(killed)}), resume=True)
    resumed = _weights(killed / "final")
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    steps = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    with pytest.raises(FileExistsError, match="--resume"):
        rm.train(cfg)


def test_unpaired_data_is_an_error_that_names_the_fix(tmp_path):
    cfg = _cfg(tmp_path, **{"data.source": "task:arithmetic_unpaired"})
    with pytest.raises(DataError, match="unpaired.*prompt, chosen, rejected.*postrl pref.*kto"):
        rm.train(cfg)


def test_ranked_rows_become_every_better_worse_pair(tmp_path):
    cfg = _cfg(tmp_path, **{"data.source": "task:arithmetic_ranked",
                        "data.task_kwargs": {"level": 1, "limit": 3, "num_responses": 4}})
    rows = load_preference_rows(cfg.data, "train")
    pairs = rm.comparisons(rows, "ranked")
    for row in rows:  # every (better, worse) pair once; equal scores (off by +1 and -1) make no pair
        score = dict(zip(row.responses, row.scores))
        mine = [(c, r) for p, c, r, _ in pairs if p is row.prompt]
        assert len(mine) == sum(a > b for a in row.scores for b in row.scores)
        assert all(score[c] > score[r] for c, r in mine)
    assert 0 < len(pairs) <= 3 * 6  # at most C(4, 2) per row


def test_a_single_file_holds_out_a_seeded_fraction(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+1=", "chosen": str(i + 1), "rejected": f"{i + 1} apples"})
                            + "\n" for i in range(40)))
    cfg = _cfg(tmp_path, **{"data.source": str(data), "data.task_kwargs": {}, "eval.holdout_fraction": 0.1})
    from postrl.learner.models import load_tokenizer
    from postrl.learner.reward_model import RenderSpec

    train, held = rm.load_pairs(cfg, load_tokenizer(cfg.model), RenderSpec())
    assert len(train) == 36 and len(held) == 4
    assert not {tuple(p.chosen) for p in train} & {tuple(p.chosen) for p in held}


def test_a_margin_column_must_be_a_number(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "1+1=", "chosen": "2", "rejected": "3", "margin": "big"}) + "\n")
    cfg = _cfg(tmp_path, **{"data.source": str(data), "data.task_kwargs": {}})
    with pytest.raises(DataError, match="row 1.*'margin'.*not a number"):
        rm.comparisons(load_preference_rows(cfg.data, "train"), str(data))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="lora"):
        resolve(RMConfig, {"model": {"lora": {"enabled": True}}})
    with pytest.raises(ConfigError, match="unknown key `train.center_rewards_coefficient`.*center_rewards_coef"):
        resolve(RMConfig, {"train": {"center_rewards_coefficient": 0.01}})


def test_the_trained_rm_is_a_reward_in_postrl_train_and_ranks_right_over_wrong(tmp_path):
    from postrl.data.preference_tasks import arithmetic_pairs
    from postrl.rewards import load_reward_fn

    # an RM trained on correct-vs-wrong one-digit sums: it learns (memorises) its training problems
    # (width 64: 98-100% of the pairs ranked right over seeds 0-3; width 32 gave 76-99%)
    cfg = _cfg(tmp_path / "rm", **{"data.source": "task:arithmetic_pairs", "train.steps": 200,
                                   "train.batch_size": 32, "train.micro_batch_size": 32, "train.lr": 1e-3,
                                   "train.warmup_steps": 10, "checkpoint.every": 1000,
                                   "model.tiny": {"hidden_size": 64, "num_layers": 2, "num_heads": 4,
                                                  "num_kv_heads": 2, "intermediate_size": 256}})
    path = rm.train(cfg)["model_dir"]

    rows = arithmetic_pairs("train", level=1)
    prompts = [r["prompt"] for r in rows]
    fn = load_reward_fn("reward_model", {"path": path})
    # completions as `postrl train` passes them for chat prompts: one assistant message each
    good = fn(prompts, [[{"role": "assistant", "content": r["chosen"]}] for r in rows])
    bad = fn(prompts, [[{"role": "assistant", "content": r["rejected"]}] for r in rows])
    assert sum(g > b for g, b in zip(good, bad)) / len(rows) >= 0.9

    run = tiny_rl_config(tmp_path, **{"rewards": [{"name": "reward_model", "kwargs": {"path": path}}],
                                      "algorithm.preset": "grpo"})
    assert run.rewards[0].kwargs["policy_tokenizer"] == "tiny"  # filled from the policy's model section
    summary = rl.train(run)
    lines = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert summary["rl_steps"] == 2 and [m["step"] for m in lines] == [1, 2]
    rewards = [m["reward/mean"] for m in lines]
    assert all(r is not None and abs(r) < 1e3 for r in rewards)
