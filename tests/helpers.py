"""Shared test helpers: hand-built rollout batches, tiny configs, killed-and-resumed runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from postrl.rollout.batch import RolloutBatch


def make_batch(rewards, group_ids, lengths=None, T=None, token_rewards=None) -> RolloutBatch:
    """A RolloutBatch with given per-sequence rewards/groups and completion lengths."""
    B = len(rewards)
    lengths = lengths or [3] * B
    T = T or max(lengths)
    mask = torch.zeros(B, T)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return RolloutBatch(
        prompt_ids=torch.ones(B, 2, dtype=torch.long), prompt_mask=torch.ones(B, 2, dtype=torch.long),
        completion_ids=torch.ones(B, T, dtype=torch.long), completion_mask=mask.long(), loss_mask=mask,
        behavior_logprobs=torch.zeros(B, T), group_ids=torch.tensor(group_ids),
        rewards=torch.tensor(rewards, dtype=torch.float32),
        token_rewards=None if token_rewards is None else torch.tensor(token_rewards, dtype=torch.float32),
    )


TINY_MODEL = {"name_or_path": "tiny", "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 2,
                                               "num_kv_heads": 1, "intermediate_size": 64}}


def tiny_rl_config(tmp_path, **overrides):
    """A seconds-long RL config on the tiny model and the arithmetic task."""
    from postrl.config import RLConfig, resolve

    raw = {"name": "t", "output_dir": str(tmp_path / "run"), "model": TINY_MODEL,
           "data": {"source": "task:arithmetic", "task_kwargs": {"level": 1}},
           "rollout": {"n": 4, "max_new_tokens": 4},
           "train": {"steps": 2, "prompts_per_step": 4, "lr": 1e-3, "micro_batch_size": 8},
           "eval": {"limit": 8, "before": False}, "checkpoint": {"every": 1, "keep_last": 2},
           "logging": {"progress": False}}
    return resolve(RLConfig, raw, overrides, source="test config")


def kill_and_resume(monkeypatch, module, step: str, train, kill_at: int = 3) -> None:
    """`train(resume=False)` killed at the `kill_at`-th call of `module.<step>`, then
    `train(resume=True)` with the real step."""
    real, calls = getattr(module, step), []

    def killed(*args, **kwargs):
        calls.append(args)
        if len(calls) == kill_at:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, step, killed)
    with pytest.raises(RuntimeError, match="killed"):
        train(False)
    monkeypatch.setattr(module, step, real)
    train(True)


def same_final_weights(run_a: Path, run_b: Path) -> bool:
    """The two runs' `final` weights are identical, tensor by tensor."""
    from safetensors.torch import load_file

    a, b = (load_file(str(r / "final" / "model.safetensors")) for r in (run_a, run_b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train_keeping_batches(monkeypatch, cfg) -> tuple[dict, list]:
    """`rl.train(cfg)` with `collect` spied on: (summary, [(parts, collect's result) per step])."""
    from postrl.trainers import rl

    seen, real = [], rl.collect

    def spy(p, *args):
        seen.append((p, real(p, *args)))
        return seen[-1][1]

    monkeypatch.setattr(rl, "collect", spy)
    summary = rl.train(cfg)
    monkeypatch.undo()
    return summary, seen
