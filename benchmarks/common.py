"""Helpers shared by the benchmark scripts: the benchmark sizes, measured child processes,
the digit reward, medians, markdown tables and the version stamp.

Nothing here imports torch at module level, so a child process that only needs the reward
(postrl loads `benchmarks.common:digit_fraction` by name) pays nothing for the rest.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


# about 480 characters of worked examples (the tiny tokenizer is character-level: ~480 tokens)
LONG_SYSTEM = ("Add the two numbers. Examples: " + " ".join(f"{a}+{b}={a + b}." for a, b in
                                                          zip(range(11, 99), range(97, 9, -2))))[:500]


@dataclass(frozen=True)
class Size:
    """One benchmark workload: the model shape and the RL step both frameworks run."""

    name: str
    arch: dict  # keyword arguments of postrl.learner.tiny.build_model
    prompts: int  # prompts per optimizer step
    n: int  # completions per prompt (group size)
    max_new_tokens: int
    reward: str  # "exact_match" (SFT'd model) or "digit_fraction" (random init)
    sft: bool  # start from `postrl sft` on the task (cached) instead of the random init
    lr: float
    steps: int  # default step count of a full run (--steps overrides)
    quick_steps: int
    eval_limit: int  # held-out prompts of the final greedy evaluation
    quick_eval_limit: int
    task: dict = field(default_factory=lambda: {"source": "task:arithmetic", "task_kwargs": {"level": 2}})
    postrl_train: dict = field(default_factory=dict)  # postrl-only `train` settings (TRL has no such option)

    @property
    def rows(self) -> int:
        """Completions per optimizer step."""
        return self.prompts * self.n


SIZES = {
    # the demo's model and RL stage (trainers/demo.py): short exact-match answers after an SFT warm start
    "small": Size("small", {"hidden_size": 96, "num_layers": 3, "num_heads": 4, "num_kv_heads": 2,
                            "intermediate_size": 384},
                  prompts=16, n=8, max_new_tokens=8, reward="exact_match", sft=True, lr=1e-4,
                  steps=50, quick_steps=5, eval_limit=500, quick_eval_limit=100),
    # ~8M parameters (7.9M, embeddings tied): compute matters. A random model rarely samples EOS, so
    # completions run the full 64 tokens; the dense digit reward gives it something learnable.
    "10m": Size("10m", {"hidden_size": 256, "num_layers": 8, "num_heads": 8, "num_kv_heads": 4,
                        "intermediate_size": 1024},
                prompts=8, n=8, max_new_tokens=64, reward="digit_fraction", sft=False, lr=1e-4,
                steps=10, quick_steps=3, eval_limit=128, quick_eval_limit=16),
    # long prompts: a ~500-token system prompt shared by all prompts (few-shot examples), 8
    # completions of 32 tokens each; postrl encodes each prompt once in generation (shared
    # prefill) and in the learner (train.prefix_sharing), TRL n times.
    "long": Size("long", {"hidden_size": 256, "num_layers": 8, "num_heads": 8, "num_kv_heads": 4,
                          "intermediate_size": 1024, "max_position_embeddings": 1024},
                 prompts=4, n=8, max_new_tokens=32, reward="digit_fraction", sft=False, lr=1e-4,
                 steps=10, quick_steps=3, eval_limit=64, quick_eval_limit=16,
                 task={"source": "task:arithmetic", "task_kwargs": {"level": 2}, "system_prompt": LONG_SYSTEM},
                 postrl_train={"prefix_sharing": True}),
}


REWARD_NAMES = {"exact_match": "exact_match", "digit_fraction": "benchmarks.common:digit_fraction"}
"""Size.reward -> the postrl reward name (built-in, or `module:function` for the benchmark's own)."""


def rl_config(size: Size, model: str, steps: int, *, reward: str | None = None) -> dict:
    """The `postrl train` config of one size: GRPO advantages and PPO-clip loss matched to TRL's
    GRPOTrainer settings in `benchmarks.vs_trl.trl_arguments`.

    Matched on purpose: KL off; advantage eps 1e-4 (TRL's `(r - mean) / (std + 1e-4)`; postrl's
    default is 1e-6); token_mean aggregation (TRL `loss_type="dapo"`); constant lr, no warm-up;
    AdamW (0.9, 0.999, 1e-8), no weight decay, grad-norm clip 1.0; one update per batch; the
    whole step in one generation batch and one learner micro-batch, as TRL does below. Evaluation
    during training is reduced to one prompt: both final models are evaluated afterwards by the
    same code, outside the timed processes.
    """
    return {
        "name": f"bench_{size.name}", "seed": 0,
        "model": {"name_or_path": model, "device": "cpu", "dtype": "float32"},
        "data": dict(size.task),
        "rollout": {"n": size.n, "temperature": 1.0, "top_p": 1.0, "top_k": 0,
                    "max_new_tokens": size.max_new_tokens, "micro_batch_size": size.rows},
        "rewards": [{"name": reward or REWARD_NAMES[size.reward]}],
        "algorithm": {"preset": "grpo", "kl_coef": 0.0, "loss_agg": "token_mean",
                      "advantage_kwargs": {"eps": 1e-4}, "loss_kwargs": {"clip_low": 0.2, "clip_high": 0.2}},
        "train": {"steps": steps, "prompts_per_step": size.prompts, "lr": size.lr, "micro_batch_size": size.rows,
                  "max_grad_norm": 1.0, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8,
                  "schedule": "constant", "warmup_steps": 0, "epochs": 1, "mini_batches": 1, "bf16": False,
                  **size.postrl_train},
        "eval": {"limit": 1, "before": False, "every": 0},
        "checkpoint": {"every": steps, "keep_last": 1},
        "logging": {"console_every": 1, "progress": False},
    }


def digit_fraction(prompts: list, completions: list, **kwargs) -> list[float]:
    """Fraction of the completion's characters that are digits (0 for an empty completion).

    A dense reward a random-init model can climb: every digit it emits instead of another byte
    raises it. Same signature for postrl and TRL: `fn(prompts, completions, **kwargs)`.
    """
    out = []
    for c in completions:
        text = c if isinstance(c, str) else (c[-1]["content"] if c else "")
        out.append(sum(ch.isdigit() for ch in text) / len(text) if text else 0.0)
    return out


@dataclass
class Measured:
    exit_code: int
    wall_s: float  # the whole process: interpreter start, imports, set-up, training, saving
    max_rss_mb: float  # the child's own peak resident set size (ru_maxrss from wait4)


# Runs argv[2:], then writes its exit code and ru_maxrss (KiB on Linux) to argv[1]. A separate
# small process because Linux seeds a child's ru_maxrss with its parent's RSS at fork (the pre-exec
# copy of the parent's memory): forked straight from a benchmark that holds torch and models,
# every child would report at least the benchmark's own size. Forked from this launcher, the
# floor is the launcher's ~10 MB.
_LAUNCHER = """
import json, os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
p.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    json.dump({"exit_code": p.returncode, "max_rss_kb": usage.ru_maxrss}, f)
"""


def run_measured(cmd: list[str], *, cwd: str | Path, log: str | Path, env: dict | None = None) -> Measured:
    """Run `cmd` with stdout and stderr to `log`: its exit code, wall time and own peak RSS.

    wait4 gives the rusage of that one child (getrusage(RUSAGE_CHILDREN) would give the maximum
    over every child reaped so far); see _LAUNCHER for why it is not forked from this process.
    """
    log = Path(log)
    report = log.with_name(log.name + ".rusage.json")
    t0 = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run([sys.executable, "-c", _LAUNCHER, str(report), *cmd], cwd=cwd, stdout=out,
                       stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    r = json.loads(report.read_text())
    return Measured(r["exit_code"], wall, r["max_rss_kb"] / 1024)


ONE_THREAD_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
                  "MKL_NUM_THREADS": "1"}
"""Environment of a benchmark's `postrl` child: offline, one torch thread (runs go side by side)."""


def run_postrl(command: str, config: dict, run_dir: Path, label: str) -> str | None:
    """`postrl COMMAND` on `config` (written beside `run_dir` as NAME.yaml, log NAME.log) with one
    thread, resumable; nothing happens when run_dir/summary.json exists. Returns None on success,
    else the log's tail (also printed)."""
    import yaml

    if (run_dir / "summary.json").exists():
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir.parent / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = run_dir.parent / f"{run_dir.name}.log"
    m = run_measured([sys.executable, "-m", "postrl.cli", command, str(path), "--resume"], cwd=".", log=log,
                     env=ONE_THREAD_ENV)
    if m.exit_code != 0:
        print(f"[{label}] FAILED (exit {m.exit_code}):\n{tail(log, 8)}", flush=True)
        return tail(log, 8)
    print(f"[{label}] done in {m.wall_s:.0f} s", flush=True)
    return None


def tail(path: str | Path, lines: int = 25) -> str:
    text = Path(path).read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def median_after_warmup(values: list[float], warmup: int = 1) -> float:
    """Median of `values` without the first `warmup` (which pay one-off allocations and caches);
    all of them when there are too few."""
    kept = values[warmup:] if len(values) > warmup else values
    return statistics.median(kept) if kept else float("nan")


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub markdown table; floats with 3 significant digits, None as a dash."""
    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_stamp() -> dict:
    """Date, versions and core count, written next to every result (versions from the installed
    metadata, so TRL is not imported just to name it)."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    stamp = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
             "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cpu": _cpu_name()}
    for pkg in ("torch", "transformers", "trl"):
        try:
            stamp[pkg] = version(pkg)
        except PackageNotFoundError:
            stamp[pkg] = None
    return stamp


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
