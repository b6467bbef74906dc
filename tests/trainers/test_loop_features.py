"""The loop features on the tiny model: each feature inside a real step, then short runs.

`collect` is called on a real rollout batch from `rl.build` (reference injection, truncation
mask, greedy baseline); the runs check that presets train for two steps and that stateful
features (dynamic sampling's sampler, the KL schedule) resume exactly.
"""

import json
import math
import shutil

import pytest
import torch
from helpers import tiny_rl_config
from safetensors.torch import load_file

from postrl.learner.checkpoint import list_checkpoints
from postrl.rollout.engines import SamplingParams
from postrl.trainers import rl
from postrl.trainers.collect import collect
from postrl.trainers.scoring import score_batch

TOKEN_REWARD = [{"name": "tiny_rewards:token_id_mean"}]  # differs within almost every group
LENGTH_REWARD = [{"name": "tiny_rewards:length_reward"}]  # equal within most groups at 4 tokens


def _first_batch(cfg):
    p = rl.build(cfg)
    rl.request_rollouts(p, 0)
    idx, batch = p.rollouts.get(0)
    return p, idx, batch


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _stable(m):
    """A metrics line without its timings (which differ between runs)."""
    return {k: v for k, v in m.items() if not k.startswith(("time/", "tokens_per_s", "memory/"))}


def _weights(run_dir):
    return load_file(str(list_checkpoints(run_dir)[-1] / "model.safetensors"))


def _kill_after(cfg, tmp_path, steps_kept):
    """A copy of the finished run as if it died after `steps_kept` checkpoints, then resumed."""
    killed = tmp_path / "killed"
    shutil.copytree(cfg.run_dir, killed)
    for ckpt in list_checkpoints(killed)[steps_kept:]:
        shutil.rmtree(ckpt)
    resumed = cfg.model_copy(update={"output_dir": str(killed)})
    rl.train(resumed, resume=True)
    return killed


def test_injected_reference_is_the_answer_plus_eos_with_the_learners_logprobs(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": [{"name": "exact_match"}], "rollout.inject_reference": "answer"})
    p, idx, batch = _first_batch(cfg)
    n, eos = cfg.rollout.n, p.tokenizer.eos_token_id
    sampled = batch.completion_ids.clone()
    idx, batch, result, metrics = collect(p, idx, batch, seed=0)
    flags = batch.metadata["reference_injected"]
    assert flags == [i % n == n - 1 for i in range(batch.size)]  # the last completion of every group
    for g, row in enumerate(idx):
        i = g * n + n - 1
        want = p.tokenizer.encode(p.train_rows[row].answer, add_special_tokens=False) + [eos]
        length = int(batch.completion_mask[i].sum())
        assert batch.completion_ids[i, :length].tolist() == want
        assert batch.loss_mask[i, :length].eq(1).all() and batch.metadata["finish_reason"][i] == "stop"
        assert torch.equal(batch.completion_ids[g * n, :sampled.shape[1]], sampled[g * n])  # samples untouched
    rows = [i for i, f in enumerate(flags) if f]
    assert torch.allclose(batch.behavior_logprobs[rows], p.learner.logprobs(batch.select(rows)))
    assert result.total[rows].eq(1.0).all() and metrics["reference/reward_mean"] == 1.0  # exact_match of the answer


def test_mask_truncated_zeroes_the_loss_mask_of_cut_completions_only(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": TOKEN_REWARD, "algorithm.mask_truncated": True,
                                      "rollout.max_new_tokens": 3})
    p, idx, batch = _first_batch(cfg)
    before = batch.loss_mask.clone()
    _, batch, _, _ = collect(p, idx, batch, seed=0)
    cut = torch.tensor([r == "length" for r in batch.metadata["finish_reason"]])
    assert cut.any()
    assert batch.loss_mask[cut].eq(0).all() and torch.equal(batch.loss_mask[~cut], before[~cut])


def test_greedy_baseline_is_the_reward_of_the_greedy_completion_of_each_prompt(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": TOKEN_REWARD, "algorithm.preset": "remax"})
    p, idx, batch = _first_batch(cfg)
    idx, batch, _, metrics = collect(p, idx, batch, seed=0)
    greedy = p.rollouts.generate([p.train_ids[i] for i in idx], SamplingParams.from_config(
        cfg.rollout, greedy=True, n=1), 0)
    want = score_batch(greedy, [p.train_rows[i] for i in idx], p.tokenizer, p.rewards).total
    assert batch.metadata["greedy_reward"] == want[batch.group_ids].tolist()
    assert metrics["reward/greedy_mean"] == float(want.mean())


def test_remax_trains_with_single_completion_groups(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": TOKEN_REWARD, "algorithm.preset": "remax", "rollout.n": 1})
    summary = rl.train(cfg)
    assert math.isfinite(summary["last/loss"]) and "last/reward/greedy_mean" in summary
    assert summary["last/advantage/abs_mean"] > 0  # samples differ from the greedy answer


def test_tempsamp_trains_with_the_reference_in_every_group(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": [{"name": "exact_match"}], "algorithm.preset": "tempsamp"})
    summary = rl.train(cfg)
    assert summary["last/reference/reward_mean"] == 1.0 and math.isfinite(summary["last/loss"])
    assert summary["last/zero_variance_groups"] < 1.0  # the reference splits groups of wrong samples


def test_dynamic_sampling_refills_logs_and_resumes_exactly(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": LENGTH_REWARD, "algorithm.preset": "dapo", "train.steps": 3,
                                      "checkpoint.keep_last": 3, "sampler.kwargs": {"max_rounds": 3}})
    assert [r.name for r in cfg.rewards] == ["tiny_rewards:length_reward", "overlong_penalty"]
    rl.train(cfg)
    lines = _metrics(cfg.run_dir)
    for m in lines:
        assert 1 <= m["dynamic_sampling/rounds"] <= 3
        assert m["dynamic_sampling/kept_groups"] <= cfg.train.prompts_per_step
        assert m["dynamic_sampling/generated_groups"] >= cfg.train.prompts_per_step
    assert any(m["dynamic_sampling/rounds"] > 1 for m in lines)  # most length groups are uninformative
    killed = _kill_after(cfg, tmp_path, 1)
    full, resumed = _weights(cfg.run_dir), _weights(killed)
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert [_stable(m) for m in _metrics(killed)] == [_stable(m) for m in lines]  # same refills after resume


def test_kl_schedule_moves_the_logged_coefficient_and_resumes_exactly(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": TOKEN_REWARD, "algorithm.preset": "grpo_d", "train.steps": 4,
                                      "checkpoint.keep_last": 4})
    rl.train(cfg)
    # linear from 0 at step 0 to 0.04 at the last step (3): 0, 0.04/3, 0.08/3, 0.04
    assert [m["kl_coef"] for m in _metrics(cfg.run_dir)] == pytest.approx([0.0, 0.04 / 3, 0.08 / 3, 0.04])
    killed = _kill_after(cfg, tmp_path, 2)
    assert [_stable(m) for m in _metrics(killed)] == [_stable(m) for m in _metrics(cfg.run_dir)]
    full, resumed = _weights(cfg.run_dir), _weights(killed)
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_reference_soup_is_the_kl_anchor_from_the_first_step(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": TOKEN_REWARD, "algorithm.kl_coef": 0.05,
                                      "model.reference_soup": ["tiny", {"init_seed": 1}]})
    rl.train(cfg)
    first = _metrics(cfg.run_dir)[0]
    assert first["kl"] > 1e-3  # the soup differs from the initial policy; a copy gives kl 0 at step 1


def test_injection_keeps_group_order_and_names_a_missing_column():
    from helpers import make_batch

    from postrl.data.loading import PromptRow
    from postrl.learner.tiny import build_tokenizer
    from postrl.trainers.collect import inject_reference

    tok = build_tokenizer()
    batch = make_batch([0.0] * 6, [0, 0, 0, 1, 1, 1], lengths=[2, 3, 1, 2, 2, 2])
    batch.metadata["finish_reason"] = ["stop"] * 6
    batch.rewards = None  # as it comes from the engine: injection happens before scoring
    rows = [PromptRow(0, "1+1=", "2", {"answer": "2"}), PromptRow(1, "9+9=", "18", {"answer": "18"})]
    out = inject_reference(batch, rows, "answer", tok)
    assert out.group_ids.tolist() == [0, 0, 0, 1, 1, 1]
    assert out.metadata["reference_injected"] == [False, False, True, False, False, True]
    assert out.completion_ids[2, :2].tolist() == tok.encode("2", add_special_tokens=False) + [tok.eos_token_id]
    assert out.completion_ids[5, :3].tolist() == tok.encode("18", add_special_tokens=False) + [tok.eos_token_id]
    assert out.completion_mask.sum(-1).tolist() == [2, 3, 2, 2, 2, 3]
    with pytest.raises(ValueError, match="no value in column 'solution'; its columns: answer"):
        inject_reference(batch, rows, "solution", tok)
