"""`postrl raft` variants after one SFT warm start: RAFT, ReST, STaR rationalisation, restart, B-STaR.

    python -m benchmarks.self_improvement [--variants all|rest,star,...] [--seeds 0,1,2] [--rounds 3]

Start: the end-to-end tests' warm start (tests/conftest.py `sft_warm_start`): a 2-layer width-64
tiny Qwen2, 400 SFT steps on 2-digit sums (batch 64, lr 3e-3, 20 warm-up steps), made once and
cached in runs/bench/sft_warm_64/final. Each variant then runs `--rounds` rounds of 64 training
prompts x 8 samples (max 6 new tokens), exact-match reward, 15 SFT steps per round (batch 32, lr
3e-4), greedy accuracy on 200 held-out sums after every round:

    raft_best     keep: best (one per prompt), threshold 1
    rest          keep: all_above, threshold 1
    star          rest + rationalize (failed prompts retried with "{prompt} (answer: {answer})")
    star_plus0    rest + rationalize with the hint "{answer}+0=" (the answer in the task's own form)
    star_restart  star + restart_from_base (every round's SFT starts from the warm start)
    b_star        rest + auto_config: b_star (temperatures 0.5/0.7/0.9/1.1, probe 32 prompts, n* = 8)

Runs in this process one after the other (a run whose summary.json exists is not redone; delete
runs/bench/self_improvement/ to redo). Prints one markdown row per variant: greedy accuracy before
and after (mean and min-max over seeds), SFT examples per round, seconds per run.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

OUT = Path("runs/bench/self_improvement")
WARM = Path("runs/bench/sft_warm_64")
TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 256}
VARIANTS = {
    "raft_best": {"raft": {"keep": "best"}},
    "rest": {},
    "star": {"raft": {"rationalize": True}},
    "star_plus0": {"raft": {"rationalize": True, "hint_template": "{answer}+0="}},
    "star_restart": {"raft": {"rationalize": True, "restart_from_base": True}},
    "b_star": {"raft": {"auto_config": "b_star"}},
}


def warm_start() -> str:
    from postrl.config import SFTConfig, resolve
    from postrl.trainers import sft

    final = WARM / "final"
    if not (final / "model.safetensors").exists():
        sft.train(resolve(SFTConfig, {
            "output_dir": str(WARM), "model": {"tiny": TINY},
            "data": {"source": "task:arithmetic", "task_kwargs": {"level": 2}},
            "train": {"steps": 400, "batch_size": 64, "micro_batch_size": 64, "lr": 3e-3, "warmup_steps": 20},
            "checkpoint": {"every": 400}, "logging": {"progress": False}}))
    return str(final)


def run(variant: str, seed: int, rounds: int, model: str) -> dict:
    from postrl.config import RaftConfig, resolve
    from postrl.trainers import raft

    out_dir = OUT / f"{variant}_r{rounds}_s{seed}"
    if (out_dir / "summary.json").exists():
        return json.loads((out_dir / "summary.json").read_text())
    over = VARIANTS[variant]
    cfg = resolve(RaftConfig, {
        "output_dir": str(out_dir), "seed": seed, "model": {"name_or_path": model},
        "data": {"source": "task:arithmetic", "task_kwargs": {"level": 2}},
        "rollout": {"n": 8, "max_new_tokens": 6}, "rewards": [{"name": "exact_match"}],
        "raft": {"rounds": rounds, "prompts_per_round": 64, "keep": "all_above", "threshold": 1.0,
                 **over.get("raft", {})},
        "train": {"sft_steps_per_round": 15, "batch_size": 32, "micro_batch_size": 32, "lr": 3e-4},
        "eval": {"limit": 200}, "checkpoint": {"keep_last": 1}, "logging": {"progress": False}})
    return raft.train(cfg)


def _rounds(summary: dict) -> list[dict]:
    rows = [json.loads(x) for x in (Path(summary["model_dir"]).parent / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "kept_fraction" in r]


def examples_per_round(summary: dict) -> float:
    return statistics.mean(r["kept_fraction"] * 64 * 8 + r.get("star/kept", 0) for r in _rounds(summary))


def hinted_per_round(summary: dict) -> float:
    return statistics.mean(r.get("star/kept", 0) for r in _rounds(summary))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="all")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    model = warm_start()
    print("| variant | greedy accuracy before | after (mean, min-max) | SFT examples / round | of them from hints "
          "| seconds / run |")
    print("|---|---|---|---|---|---|")
    for v in variants:
        s = [run(v, seed, args.rounds, model) for seed in seeds]
        after = [x["accuracy_after"] for x in s]
        print(f"| {v} | {statistics.mean(x['accuracy_before'] for x in s):.3f} | {statistics.mean(after):.3f} "
              f"({min(after):.3f}-{max(after):.3f}) | {statistics.mean(map(examples_per_round, s)):.0f} | "
              f"{statistics.mean(map(hinted_per_round, s)):.1f} | "
              f"{statistics.mean(x['total_seconds'] for x in s):.0f} |",
              flush=True)
        for x in s:
            if "b_star" in x:
                print("    b_star choices:", [(c["b_star/temperature"], c["b_star/threshold"]) for c in x["b_star"]])


if __name__ == "__main__":
    main()
