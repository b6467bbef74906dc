"""Prompt samplers on a mix of difficulties, same step budget, several seeds: wasted groups,
rollouts per accuracy gained, wall time to a target accuracy.

    python -m benchmarks.compare_samplers [--samplers all|uniform,vade,...] [--seeds 0,1,2]
                                          [--steps 60] [--jobs 2] [--quick] [--write-docs]

Start: the demo's SFT warm start (0.44M Qwen2 trained on 2-digit sums; cached in
runs/bench/sft_small/final, shared with `vs_trl` and `compare_algorithms`). Data:
`task:arithmetic` with levels 1, 2 and 4 and at most `--per-level` problems of each (`per_level`),
so the training set mixes problems the warm start almost always solves (1-digit sums), often
solves (2-digit sums) and rarely solves (3-digit sums and differences), and is small enough
(about 330 rows) that a prompt comes back every few steps, which is what the history-based
samplers learn from. Each run is the demo's RL stage (16 prompts x 8 completions of <= 8 tokens,
exact-match reward, GRPO) at `--lr` with `sampler.name` swapped, evaluated every `--eval-every`
steps (and before the first) on `--eval-limit` held-out problems of the same mix, greedy.

Reported per sampler, mean over seeds (min-max):
- zero-variance groups: the share of trained groups whose 8 rewards were all equal (no signal);
- rollouts: completions generated over the run, refills and hinted retries included;
- rollouts per +0.01 accuracy: rollouts / (100 x (final - initial greedy accuracy)); "no gain"
  when the run did not improve;
- seconds to target: training seconds (the sum of `time/step`, evaluation excluded) until the
  first evaluation at or above initial accuracy + `--target-gain`; "-" when never reached;
- final greedy accuracy.
Runs are `postrl train` processes with one torch thread each, `--jobs` at a time; a run whose
summary.json exists is not redone (delete runs/bench/samplers/ to redo). Writes
runs/bench/compare_samplers.{json,md,png}; `--write-docs` also writes docs/compare_samplers.{md,png}.
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import SIZES, machine_stamp, markdown_table, run_postrl

OUT = Path("runs/bench")
DOCS_TABLE = Path("docs/compare_samplers.md")
DOCS_PLOT = Path("docs/compare_samplers.png")
LEVELS = [1, 2, 4]
EXTRA = {
    # tiered hint columns for Scaf-GRPO (data/arithmetic_hints.py); it hints only after its exemption
    # period (50 steps by default), shortened so the hints act within the benchmark's budget
    "scaf_grpo": {"data": {"task_kwargs": {"hints": True}}, "sampler": {"kwargs": {"exemption_steps": 10}}},
    # the tiny model cannot paraphrase; CLPO's rule-based arithmetic rewriter stands in for the policy's
    "clpo": {"sampler": {"kwargs": {"rewriter": "arithmetic"}}},
    # ARPO's success replay is a loop section, not a sampler: uniform prompts plus `replay:`
    "success_replay": {"sampler": {"name": "uniform"}, "replay": {}},
}
"""Per-run config additions: what a sampler needs to do anything on this task, and the runs that
are not a sampler of their own (named here, listed after the samplers)."""
NOT_SAMPLERS = ["success_replay"]


def run_config(sampler: str, seed: int, model: str, args, run_dir: Path) -> dict:
    from postrl.trainers.demo import GRPO

    extra = EXTRA.get(sampler, {})
    task_kwargs = {"level": LEVELS, "per_level": args.per_level, **extra.get("data", {}).get("task_kwargs", {})}
    return {**GRPO, "name": f"{sampler}_s{seed}", "seed": seed, "output_dir": str(run_dir),
            "model": {"name_or_path": model},
            "data": {"source": "task:arithmetic", "task_kwargs": task_kwargs},
            "sampler": {"name": sampler, **extra.get("sampler", {})},
            **({"replay": extra["replay"]} if "replay" in extra else {}),
            "train": {**GRPO["train"], "steps": args.steps, "lr": args.lr},
            "eval": {"limit": args.eval_limit, "every": args.eval_every, "before": True},
            "checkpoint": {"every": args.steps, "keep_last": 1},
            "logging": {"console_every": 100000, "progress": False}}


def run_one(sampler: str, seed: int, model: str, args, root: Path) -> dict:
    run_dir = root / sampler / f"seed{seed}"
    failed = run_postrl("train", run_config(sampler, seed, model, args, run_dir), run_dir, f"{sampler} seed {seed}")
    if failed:
        return {"sampler": sampler, "seed": seed, "failed": failed}
    return read_run(sampler, seed, run_dir, args.target_gain)


def rollouts_of(step: dict, n: int = 8, prompts: int = 16) -> float:
    """Completions one step generated: its groups (refills included) plus hinted retries."""
    groups = step.get("dynamic_sampling/generated_groups", prompts)
    return groups * n + step.get("hints/rescue_tries", 0) + step.get("rollouts/extra", 0)


def read_run(sampler: str, seed: int, run_dir: Path, target_gain: float) -> dict:
    steps = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "zero_variance_groups" in s]
    evals = [json.loads(x) for x in (run_dir / "eval.jsonl").read_text().splitlines()]
    start, final = evals[0]["accuracy"], evals[-1]["accuracy"]
    spent, seconds, cum_rollouts, cum_seconds = 0.0, 0.0, {0: 0.0}, {0: 0.0}
    for i, s in enumerate(steps, start=1):
        spent += rollouts_of(s)
        seconds += s["time/step"]
        cum_rollouts[i], cum_seconds[i] = spent, seconds
    reached = next((cum_seconds[e["step"]] for e in evals if e["accuracy"] >= start + target_gain - 1e-9), None)
    gain = final - start
    return {"sampler": sampler, "seed": seed, "start": start, "final": final, "gain": gain,
            "zero_variance": statistics.fmean(s["zero_variance_groups"] for s in steps),
            "rollouts": spent, "per_point": spent / (100 * gain) if gain > 0 else None,
            "seconds_to_target": reached, "seconds": seconds,
            "curve": [(cum_rollouts[e["step"]], e["accuracy"]) for e in evals]}


def cell(values, fmt="{:.3f}", missing="-"):
    values = [v for v in values if v is not None]
    if not values:
        return missing
    mean = statistics.fmean(values)
    return fmt.format(mean) + (f" ({fmt.format(min(values))}-{fmt.format(max(values))})" if len(values) > 1 else "")


def summarize(runs: list[dict], samplers: list[str]) -> list[list]:
    rows = []
    for name in samplers:
        ok = [r for r in runs if r["sampler"] == name and "failed" not in r]
        if not ok:
            rows.append([name, "failed"] + ["-"] * 6)
            continue
        per_point = [r["per_point"] for r in ok]
        reached = [r["seconds_to_target"] for r in ok]
        rows.append([name, cell([r["zero_variance"] for r in ok], "{:.2f}"), cell([r["rollouts"] for r in ok], "{:.0f}"),
                     cell(per_point, "{:.0f}", "no gain") + (f" [{sum(p is None for p in per_point)} no gain]"
                                                             if any(p is None for p in per_point) and
                                                             any(p is not None for p in per_point) else ""),
                     cell(reached, "{:.0f}") + f" [{sum(t is not None for t in reached)}/{len(ok)} reached]",
                     cell([r["final"] for r in ok]), len(ok)])
    return rows


HEADERS = ["sampler", "zero-variance groups", "rollouts", "rollouts per +0.01 acc", "seconds to target",
           "final greedy acc", "seeds"]


def plot(runs: list[dict], samplers: list[str], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 5))
    curve_ax, bar_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    cmap = __import__("matplotlib").colormaps["tab20"]
    shown = []
    for i, name in enumerate(samplers):
        ok = [r for r in runs if r["sampler"] == name and "failed" not in r]
        if not ok:
            continue
        shown.append((name, statistics.fmean(r["zero_variance"] for r in ok)))
        points = min(len(r["curve"]) for r in ok)
        xs = [statistics.fmean(r["curve"][j][0] for r in ok) for j in range(points)]
        ys = [statistics.fmean(r["curve"][j][1] for r in ok) for j in range(points)]
        curve_ax.plot(xs, ys, "-o", markersize=3, color=cmap(i % 20), label=name)
    curve_ax.set_title("greedy accuracy (held-out mix) vs rollouts spent, mean over seeds")
    curve_ax.set_xlabel("completions generated")
    curve_ax.grid(alpha=0.3)
    curve_ax.legend(fontsize=7, ncol=2)
    bar_ax.barh([n for n, _ in shown], [z for _, z in shown], color=[cmap(samplers.index(n) % 20) for n, _ in shown])
    bar_ax.set_title("share of zero-variance groups (trained batches)")
    bar_ax.invert_yaxis()
    bar_ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))


def main() -> None:
    from postrl.samplers import SAMPLERS

    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_samplers", description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", default="all",
                        help=f"comma-separated, or all ({', '.join(SAMPLERS.names() + NOT_SAMPLERS)})")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-limit", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--per-level", type=int, default=128, help="training (and test) problems per level")
    parser.add_argument("--target-gain", type=float, default=0.03, help="target = initial accuracy + this")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--quick", action="store_true", help="10 steps, 1 seed, 100 problems (a smoke run)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--write-docs", action="store_true", help=f"write the table and plot to {DOCS_TABLE}")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds, args.eval_every, args.eval_limit = 10, "0", 5, 100
    samplers = ["uniform"] + [s for s in SAMPLERS.names() if s != "uniform"] + NOT_SAMPLERS \
        if args.samplers == "all" else args.samplers.split(",")
    unknown = [s for s in samplers if s not in SAMPLERS and s not in NOT_SAMPLERS]
    if unknown:
        parser.error(f"unknown sampler {', '.join(unknown)}; valid: {', '.join(SAMPLERS.names() + NOT_SAMPLERS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    root = out / ("samplers_quick" if args.quick else f"samplers_{args.steps}_lr{args.lr:g}")

    from benchmarks.vs_trl import prepare_model

    model = str(prepare_model(SIZES["small"], out))
    jobs = [(name, seed) for seed in seeds for name in samplers]
    print(f"{len(jobs)} runs ({len(samplers)} samplers x {len(seeds)} seeds), {args.steps} steps each, "
          f"{args.jobs} at a time; start model {model}", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda job: run_one(*job, model, args, root), jobs))

    table = markdown_table(HEADERS, summarize(runs, samplers))
    stamp = machine_stamp()
    ok = [r for r in runs if "failed" not in r]
    head = (f"{stamp['date']}, {stamp['cpu']}, torch {stamp['torch']}: `python -m benchmarks.compare_samplers "
            f"--steps {args.steps} --seeds {args.seeds}` — GRPO (lr {args.lr}) from the demo's SFT warm start on arithmetic "
            f"levels {LEVELS} ({args.per_level} problems per level), {args.steps} steps of 16 prompts x 8 completions; greedy "
            f"accuracy on {args.eval_limit} held-out problems of the same mix, "
            f"{statistics.fmean(r['start'] for r in ok):.3f} at step 0; target = +{args.target_gain}. "
            "Mean over seeds (min-max).")
    text = head + "\n\n" + table + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare_samplers.json").write_text(json.dumps({"machine": stamp, "args": vars(args), "runs": runs},
                                                          indent=1))
    (out / "compare_samplers.md").write_text(text)
    plot(runs, samplers, out / "compare_samplers.png")
    print(text)
    if args.write_docs:
        DOCS_TABLE.write_text(text)
        plot(runs, samplers, DOCS_PLOT)


if __name__ == "__main__":
    main()
