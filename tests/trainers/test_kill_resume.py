"""`postrl train` in a subprocess, stopped from outside: SIGTERM / SIGINT save a checkpoint and exit
with 128 + signal; SIGKILL at random moments (seeded) loses nothing. Resumed to the end, every
run has the weights of an uninterrupted one.

Deterministic mode here means: CPU, the `hf` engine, the same thread count in every process
(OMP_NUM_THREADS=1) and per-step seeds (rl._step_seed), with the RNG states in the checkpoint.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from postrl.learner.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parents[1]
STEPS = 30
CONFIG = f"""
name: kill_resume
seed: 3
model: {{name_or_path: tiny, tiny: {{hidden_size: 32, num_layers: 2, num_heads: 2, num_kv_heads: 1,
        intermediate_size: 64}}}}
data: {{source: "task:arithmetic", task_kwargs: {{level: 1}}}}
rollout: {{n: 4, max_new_tokens: 4}}
rewards: [{{name: "tiny_rewards:token_id_mean"}}]
sampler: {{kwargs: {{shuffle: true}}}}
train: {{steps: {STEPS}, prompts_per_step: 4, lr: 1.0e-3, micro_batch_size: 16, mini_batches: 2}}
eval: {{limit: 4, before: false}}
checkpoint: {{every: 1, keep_last: 2}}
logging: {{progress: false}}
"""


def _start(config: Path, run: Path, resume: bool) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(TESTS),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "postrl.cli", "train", str(config), "--out", str(run)]
    cmd += ["--resume"] if resume else []
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=TESTS)


def _steps_logged(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line)["step"])
        except ValueError:  # a line cut by the kill
            pass
    return out


def _wait_for_step_after(proc: subprocess.Popen, run: Path, after: int, timeout: float = 60) -> None:
    """Until the run logged a step beyond `after` (it is training, past start-up)."""
    end = time.time() + timeout
    while max(_steps_logged(run), default=0) <= after:
        assert proc.poll() is None, f"the run ended early: {proc.communicate()[1][-2000:]}"
        assert time.time() < end, "no training progress"
        time.sleep(0.02)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    last = list_checkpoints(run)[-1]
    assert last.name == f"step_{STEPS:06d}"
    return load_file(str(last / "model.safetensors"))


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _finish(config: Path, run: Path) -> None:
    proc = _start(config, run, resume=run.exists())
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]


def test_sigterm_then_sigkills_at_random_moments_then_resume_ends_with_the_same_weights(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    _finish(config, tmp_path / "straight")

    # SIGTERM (SIGINT takes the same path, exit 130: tests/trainers/test_faults.py sends both in-process)
    run = tmp_path / "run"
    proc = _start(config, run, resume=False)
    _wait_for_step_after(proc, run, 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    stopped_at = _steps_logged(run)[-1]
    assert stopped_at < STEPS and list_checkpoints(run)[-1].name == f"step_{stopped_at:06d}"
    assert f"SIGTERM after step {stopped_at}" in err and "--resume" in err

    # SIGKILL, seeded random moments: anywhere in a step (sampling, update, checkpoint write)
    rng, progress = random.Random(8), [stopped_at]
    for _ in range(3):
        proc = _start(config, run, resume=True)
        _wait_for_step_after(proc, run, progress[-1])
        time.sleep(rng.uniform(0.0, 0.25))
        assert proc.poll() is None, "the run finished before it could be killed; make the run longer"
        proc.kill()
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        progress.append(max(_steps_logged(run), default=0))
    assert progress == sorted(progress) and progress[-1] < STEPS, progress

    _finish(config, run)
    assert _same(_weights(run), _weights(tmp_path / "straight"))
    assert _steps_logged(run) == list(range(1, STEPS + 1))  # no step lost or logged twice
    assert [p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith("step_")] == []
    assert json.loads((run / "summary.json").read_text())["faults/interrupted"] == 1
