"""`postrl train` end to end on a tiny model: parameters move, files appear, resume is exact."""

import json
import shutil

import pytest
import torch
from helpers import tiny_rl_config

from postrl.learner.checkpoint import list_checkpoints
from postrl.learner.models import load_model, load_tokenizer
from postrl.trainers import rl

pytestmark = pytest.mark.slow
LENGTH_REWARD = [{"name": "tiny_rewards:length_reward"}]
TOKEN_REWARD = [{"name": "tiny_rewards:token_id_mean"}]  # non-zero advantages in every group


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_two_steps_change_every_parameter_and_write_the_run_files(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": TOKEN_REWARD, "algorithm.preset": "grpo"})
    initial = load_model(cfg.model, load_tokenizer(cfg.model), torch.device("cpu")).state_dict()
    summary = rl.train(cfg)
    run = cfg.run_dir
    final = _weights(list_checkpoints(run)[-1])
    unchanged = [k for k, v in final.items() if torch.equal(v, initial[k])]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    for key in ("loss", "reward/mean", "reward/token_id_mean/mean", "accuracy", "kl", "entropy", "clip_frac",
                "completion_len/mean", "zero_variance_groups", "tokens_per_s", "time/step", "memory/peak_mb"):
        assert key in lines[0], key
    assert lines[0]["kl"] >= 0 and lines[1]["kl"] > 0  # grpo preset: k3 KL against the initial policy
    assert (run / "config.yaml").exists() and (run / "summary.json").exists()
    assert summary["rl_steps"] == 2 and summary["accuracy_after"] is not None


def test_resume_from_a_mid_run_checkpoint_gives_identical_weights(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": LENGTH_REWARD, "train.steps": 4, "checkpoint.keep_last": 4,
                                      "train.mini_batches": 2, "sampler.kwargs": {"shuffle": True}})
    rl.train(cfg)
    full = _weights(list_checkpoints(cfg.run_dir)[-1])

    # a run killed after step 2: its directory holds checkpoints up to step 2 only
    killed = tmp_path / "killed"
    shutil.copytree(cfg.run_dir, killed)
    for ckpt in list_checkpoints(killed)[2:]:
        shutil.rmtree(ckpt)
    resumed_cfg = cfg.model_copy(update={"output_dir": str(killed)})
    rl.train(resumed_cfg, resume=True)
    resumed = _weights(list_checkpoints(killed)[-1])
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    steps = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # the dead run's later lines are gone, no duplicates


def test_existing_run_without_resume_is_refused(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"train.steps": 1})
    rl.train(cfg)
    with pytest.raises(FileExistsError, match="--resume"):
        rl.train(cfg)


def test_reward_rises_on_a_dense_task_within_a_bounded_number_of_steps(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{
        "rewards": [{"name": "tiny_rewards:digit_fraction"}], "train.steps": 40, "train.lr": 5e-3,
        "rollout.n": 8, "rollout.max_new_tokens": 4, "checkpoint.every": 100, "eval.limit": 1,
        "algorithm.advantage": "grpo"})
    rl.train(cfg)
    rewards = [json.loads(x)["reward/mean"] for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.2, (first, last)


def test_a_single_file_source_without_eval_source_is_not_evaluated_on_its_own_rows(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(6)))
    cfg = tiny_rl_config(tmp_path, **{"data": {"source": str(data)}, "train.steps": 1})
    summary = rl.train(cfg)
    assert summary["accuracy_after"] is None and not (cfg.run_dir / "eval.jsonl").exists()
    held_out = tiny_rl_config(tmp_path / "b", **{"data": {"source": str(data), "eval_source": str(data)},
                                                 "train.steps": 1})
    assert rl.train(held_out)["accuracy_after"] is not None
