"""Length shapers after a verbose warm start: completion length and accuracy before and after RL.

    python -m benchmarks.length_control [--runs grpo,hapo,length_schedule,hbpo_grpo,hbpo] [--seeds 0,1]

Start: the demo's SFT warm start (runs/bench/sft_small/final, shared with `vs_trl`), fine-tuned
400 steps on `task:arithmetic_verbose` (every problem answered in one of three lengths: "46",
"The answer is 46.", "Let me add them. The answer is 46."; batch 64, lr 1e-3, cosine), cached in
runs/bench/sft_verbose/final. The HBPO runs start from a 1000-step fine-tune on the same data
with the budget written in front ("Budget 24: The answer is 46.", `budget_prefix: true`), cached
in runs/bench/sft_budget/final. Each RL run: GRPO, `math_verify` reward, 60 steps of 16 prompts x
8 completions (HBPO: 12, in budget subgroups 8/24/48) of <= 48 tokens (HBPO 64), lr 1e-4, on the
first 64 level-2 problems (`data.limit: 64`, so a prompt comes back about 15 times: HAPO's
per-prompt history needs visits; evaluation is greedy on the same 64 held-out-split problems):

    grpo              no length control
    hapo              length: {name: hapo}
    length_schedule   length: {name: length_schedule, kwargs: {schedule: linear}}
    hbpo_grpo         GRPO from the budget warm start (HBPO's baseline)
    hbpo              rollout.budgets [8, 24, 48], budget_prompt "Budget {budget}: ", length: {name: hbpo}

Prints one markdown row per run and seed: sampled completion length over the first and last 10
steps, training accuracy over the last 10, greedy accuracy and greedy length before -> after, and
the first step whose mean sampled length is below 6 tokens. Runs are separate `postrl` processes
(one torch thread); a run whose summary.json exists is not redone (delete runs/bench/length/).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.common import SIZES, run_postrl

OUT = Path("runs/bench")
HBPO = {"rollout": {"n": 12, "max_new_tokens": 64, "budgets": [8, 24, 48], "budget_prompt": "Budget {budget}: "},
        "train": {"micro_batch_size": 192}}
RUNS = {
    "grpo": ("sft_verbose", {}),
    "hapo": ("sft_verbose", {"length": {"name": "hapo"}}),
    "length_schedule": ("sft_verbose", {"length": {"name": "length_schedule", "kwargs": {"schedule": "linear"}}}),
    "hbpo_grpo": ("sft_budget", {"rollout": {"n": 12, "max_new_tokens": 64}, "train": {"micro_batch_size": 192}}),
    "hbpo": ("sft_budget", {**HBPO, "length": {"name": "hbpo"}}),
}
WARM = {"sft_verbose": (400, False), "sft_budget": (1000, True)}
"""warm start -> (SFT steps, budget_prefix)."""


def postrl(command: str, config: dict, run_dir: Path) -> None:
    failed = run_postrl(command, config, run_dir, run_dir.name)
    if failed:
        raise SystemExit(f"postrl {command} for {run_dir} failed")


def warm_start(name: str, base: str, root: Path) -> str:
    steps, budget_prefix = WARM[name]
    postrl("sft", {"name": name, "output_dir": str(root / name), "seed": 0, "model": {"name_or_path": base},
                   "data": {"source": "task:arithmetic_verbose", "task_kwargs": {"budget_prefix": budget_prefix}},
                   "train": {"steps": steps, "batch_size": 64, "micro_batch_size": 64, "lr": 1e-3, "warmup_steps": 30,
                             "schedule": "cosine", "min_lr_ratio": 0.1},
                   "checkpoint": {"every": steps, "keep_last": 1}, "logging": {"progress": False}}, root / name)
    return str(root / name / "final")


def rl_config(run: str, seed: int, model: str, run_dir: Path) -> dict:
    _, extra = RUNS[run]
    cfg = {"name": f"{run}_s{seed}", "output_dir": str(run_dir), "seed": seed, "model": {"name_or_path": model},
           "data": {"source": "task:arithmetic", "task_kwargs": {"level": 2}, "limit": 64},
           "rollout": {"n": 8, "temperature": 1.0, "max_new_tokens": 48},
           "rewards": [{"name": "math_verify"}],
           "algorithm": {"preset": "grpo", "kl_coef": 0.0},
           "train": {"steps": 60, "prompts_per_step": 16, "lr": 1e-4, "micro_batch_size": 128},
           "eval": {"limit": 64, "every": 20},
           "checkpoint": {"every": 60, "keep_last": 1}, "logging": {"console_every": 100000, "progress": False}}
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) and key in cfg else value
    return cfg


def summarize(run: str, seed: int, run_dir: Path) -> list:
    steps = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "completion_len/mean" in s]
    evals = [json.loads(x) for x in (run_dir / "eval.jsonl").read_text().splitlines()]

    def mean(rows, key):
        return statistics.fmean(r[key] for r in rows)

    short = next((s["step"] for s in steps if s["completion_len/mean"] < 6), None)
    return [run, seed, f"{mean(steps[:10], 'completion_len/mean'):.1f} -> {mean(steps[-10:], 'completion_len/mean'):.1f}",
            f"{mean(steps[-10:], 'accuracy'):.3f}",
            f"{evals[0]['accuracy']:.3f} -> {evals[-1]['accuracy']:.3f}",
            f"{evals[0]['completion_len']:.1f} -> {evals[-1]['completion_len']:.1f}", short if short is not None else "-"]


def main() -> None:
    from benchmarks.common import markdown_table
    from benchmarks.vs_trl import prepare_model

    parser = argparse.ArgumentParser(prog="python -m benchmarks.length_control", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="grpo,hapo,length_schedule", help=f"comma-separated from {', '.join(RUNS)}")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    runs = args.runs.split(",")
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        parser.error(f"unknown run {', '.join(unknown)}; valid: {', '.join(RUNS)}")
    out = Path(args.out)
    base = str(prepare_model(SIZES["small"], out))
    rows = []
    for run in runs:
        model = warm_start(RUNS[run][0], base, out)
        for seed in [int(s) for s in args.seeds.split(",")]:
            run_dir = out / "length" / f"{run}_s{seed}"
            postrl("train", rl_config(run, seed, model, run_dir), run_dir)
            rows.append(summarize(run, seed, run_dir))
    print(markdown_table(["run", "seed", "sampled length, first 10 -> last 10 steps", "train accuracy, last 10",
                          "greedy accuracy before -> after", "greedy length before -> after",
                          "first step with sampled length < 6"], rows))


if __name__ == "__main__":
    main()
