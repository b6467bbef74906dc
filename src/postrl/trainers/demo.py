"""`postrl demo`: the embedded default, end to end with no network.

1. build a tiny Qwen2 model and a character tokenizer (postrl.learner.tiny);
2. warm-start it by a short SFT on 2-digit addition (`trainers.sft`, the same code as `postrl sft`);
3. train it with GRPO (`trainers.rl`, the same code as `postrl train`), evaluating greedy
   accuracy on 500 held-out problems before and after;
4. print a results table, draw reward/accuracy curves, write `summary.json`.

The two stage configs are plain data below and are written to the output directory, so the
demo can be re-run stage by stage with `postrl sft` / `postrl train`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from postrl.config import RLConfig, SFTConfig, resolve

# 0.44M parameters: on a slow 2-core VM a 3-layer width-96 model learns 2-digit addition in a few
# hundred steps at half the step time of the 1M width-128 one.
TINY = {"arch": "qwen2", "hidden_size": 96, "num_layers": 3, "num_heads": 4, "num_kv_heads": 2,
        "intermediate_size": 384}
TASK = {"source": "task:arithmetic", "task_kwargs": {"level": 2}}

SFT = {
    "name": "sft", "model": {"name_or_path": "tiny", "tiny": TINY}, "data": TASK,
    # stopped mid-way on purpose (greedy accuracy ~0.5-0.8): the RL stage has something to fix
    "train": {"steps": 380, "batch_size": 128, "micro_batch_size": 128, "lr": 2e-3, "warmup_steps": 50},
    "checkpoint": {"every": 150, "keep_last": 1}, "logging": {"console_every": 100000},
}

GRPO = {
    "name": "grpo", "data": TASK,
    "rollout": {"n": 8, "temperature": 1.0, "max_new_tokens": 8},
    "rewards": [{"name": "exact_match"}],
    "algorithm": {"preset": "grpo", "kl_coef": 0.0},
    "train": {"steps": 200, "prompts_per_step": 16, "lr": 1e-4, "micro_batch_size": 128, "max_grad_norm": 1.0},
    "eval": {"limit": 500, "every": 25},
    "checkpoint": {"every": 50, "keep_last": 1}, "logging": {"console_every": 100000},
}


def run_demo(out: str | Path = "runs/demo", *, console=None, seed: int = 0, sft_overrides=None,
             rl_overrides=None) -> dict:
    from postrl.trainers import rl, sft
    from postrl.tracking import plot_run

    t0 = time.perf_counter()
    out = Path(out)
    sft_cfg = resolve(SFTConfig, SFT, {"output_dir": str(out / "sft"), "seed": seed, **(sft_overrides or {})},
                      source="demo sft config")
    sft_summary = sft.train(sft_cfg, resume=True, console=console)
    rl_cfg = resolve(RLConfig, GRPO, {"output_dir": str(out / "grpo"), "seed": seed,
                                      "model.name_or_path": sft_summary["model_dir"], **(rl_overrides or {})},
                     source="demo grpo config")
    rl_summary = rl.train(rl_cfg, resume=True, console=console)
    plot = plot_run(rl_cfg.run_dir, out=out / "curves.png")

    summary = {
        "accuracy_before": rl_summary["accuracy_before"], "accuracy_after": rl_summary["accuracy_after"],
        "accuracy_gain": None, "rl_steps": rl_summary["rl_steps"], "rl_seconds": rl_summary["rl_seconds"],
        "sft_steps": sft_summary["sft_steps"], "sft_seconds": sft_summary["sft_seconds"],
        "eval_problems": rl_summary.get("eval/problems"), "total_seconds": round(time.perf_counter() - t0, 3),
        "plot": str(plot), "model_dir": str(rl_cfg.run_dir / "checkpoints"),
    }
    if summary["accuracy_before"] is not None and summary["accuracy_after"] is not None:
        summary["accuracy_gain"] = round(summary["accuracy_after"] - summary["accuracy_before"], 4)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if console is not None:
        _print_table(console, summary, out)
    return summary


def _print_table(console, s: dict, out: Path) -> None:
    from rich.table import Table

    table = Table(title="postrl demo: tiny Qwen2, 2-digit addition, SFT warm start then GRPO",
                  title_justify="left")
    table.add_column("stage")
    table.add_column("steps", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column(f"greedy accuracy ({s['eval_problems']} held-out)", justify="right")
    table.add_row("SFT warm start", str(s["sft_steps"]), f"{s['sft_seconds']:.1f}", f"{s['accuracy_before']:.3f}")
    table.add_row("GRPO", str(s["rl_steps"]), f"{s['rl_seconds']:.1f}", f"{s['accuracy_after']:.3f}")
    console.print(table)
    console.print(f"accuracy gain {s['accuracy_gain']:+.3f}; total {s['total_seconds']:.0f} s; "
                  f"curves {s['plot']}; summary {out / 'summary.json'}")
