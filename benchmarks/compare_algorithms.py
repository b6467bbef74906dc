"""Every preset on the demo task, same budget, several seeds: accuracy, pass@k, entropy, wasted rollouts.

    python -m benchmarks.compare_algorithms [--presets all|grpo,rloo,...] [--seeds 0,1,2]
                                            [--steps 100] [--jobs 2] [--quick] [--write-docs]

Start: the demo's SFT warm start (0.44M Qwen2 on 2-digit addition, greedy accuracy ~0.76; made
once and cached in runs/bench/sft_small/final, shared with `vs_trl`). Each run is the demo's RL
stage (`trainers.demo.GRPO`: 16 prompts x 8 completions of <= 8 tokens, exact-match reward,
lr 1e-4) with `algorithm.preset` swapped and `--mini-batches` optimizer updates per batch (default
4, so later updates are off-policy, as in the papers' recipes; with 1 every ratio is exactly 1 and
the clipping losses coincide with token-mean REINFORCE), for `--steps` steps, evaluated
every `--eval-every` steps on `--eval-limit` held-out problems: greedy accuracy and sampled
pass@1 / pass@8 (8 samples per problem at temperature 1, the unbiased estimator).

Reported per preset (mean and, in brackets, min-max over seeds): final greedy accuracy, final
pass@1 and pass@8, the policy's mean token entropy over the last 20% of steps, the share of
zero-variance groups among the trained batches (all 8 completions equally rewarded: no signal),
completions generated per step (more than 128 when a method generates extra, e.g. remax's greedy
baseline, dynamic sampling's refills, segment Monte-Carlo), and median seconds per step.

Runs are separate `postrl train` processes with one torch thread each, `--jobs` at a time; a run
whose summary.json exists is not redone (delete runs/bench/algorithms/ to redo everything).
Writes runs/bench/compare_algorithms.{json,md,png}; `--write-docs` also writes the table to
docs/compare_algorithms.md and .png; `make docs` puts the table into docs/algorithms.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import SIZES, machine_stamp, markdown_table, run_postrl

OUT = Path("runs/bench")
DOCS_TABLE = Path("docs/compare_algorithms.md")
DOCS_PLOT = Path("docs/compare_algorithms.png")
KS = [1, 8]


def run_config(preset: str, seed: int, model: str, steps: int, eval_every: int, eval_limit: int,
               run_dir: Path, mini_batches: int = 4) -> dict:
    """The demo's RL stage with `preset` in place of grpo, `mini_batches` updates per batch;
    evaluation with pass@k along the way."""
    from postrl.trainers.demo import GRPO

    return {**GRPO, "name": f"{preset}_s{seed}", "seed": seed, "output_dir": str(run_dir),
            "model": {"name_or_path": model},
            "algorithm": {"preset": preset},
            "train": {**GRPO["train"], "steps": steps, "mini_batches": mini_batches,
                      "micro_batch_size": 128 // mini_batches},
            "eval": {"limit": eval_limit, "every": eval_every, "k": KS, "before": True},
            "checkpoint": {"every": steps, "keep_last": 1},
            "logging": {"console_every": 100000, "progress": False}}


def run_one(preset: str, seed: int, model: str, args, root: Path) -> dict:
    run_dir = root / preset / f"seed{seed}"
    config = run_config(preset, seed, model, args.steps, args.eval_every, args.eval_limit, run_dir, args.mini_batches)
    failed = run_postrl("train", config, run_dir, f"{preset} seed {seed}")
    if failed:
        return {"preset": preset, "seed": seed, "failed": failed}
    return read_run(preset, seed, run_dir)


def read_run(preset: str, seed: int, run_dir: Path) -> dict:
    steps = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [json.loads(x) for x in (run_dir / "eval.jsonl").read_text().splitlines()]
    tail_n = max(1, len(steps) // 5)
    per_step = [s.get("dynamic_sampling/generated_groups", 16) * 8 + s.get("rollouts/extra", 0) for s in steps]
    return {"preset": preset, "seed": seed, "evals": evals,
            "entropy": [s.get("entropy") for s in steps],
            "final": evals[-1], "start": evals[0],
            "entropy_end": statistics.fmean(s["entropy"] for s in steps[-tail_n:] if s.get("entropy") is not None)
            if any(s.get("entropy") is not None for s in steps[-tail_n:]) else None,
            "zero_variance": statistics.fmean(s["zero_variance_groups"] for s in steps),
            "completions_per_step": statistics.fmean(per_step),
            "s_per_step": statistics.median(s["time/step"] for s in steps)}


def summarize(runs: list[dict]) -> list[list]:
    def cell(values, fmt="{:.3f}"):
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        mean = statistics.fmean(values)
        return fmt.format(mean) + (f" ({fmt.format(min(values))}-{fmt.format(max(values))})" if len(values) > 1 else "")

    rows = []
    by_preset: dict[str, list[dict]] = {}
    for r in runs:
        by_preset.setdefault(r["preset"], []).append(r)
    for preset in sorted(by_preset):
        ok = [r for r in by_preset[preset] if "failed" not in r]
        if not ok:
            rows.append([preset, "failed"] + ["-"] * 7)
            continue
        rows.append([preset, cell([r["final"]["accuracy"] for r in ok]), cell([r["final"].get("pass@1") for r in ok]),
                     cell([r["final"].get("pass@8") for r in ok]), cell([r["entropy_end"] for r in ok]),
                     cell([r["zero_variance"] for r in ok], "{:.2f}"), cell([r["completions_per_step"] for r in ok], "{:.0f}"),
                     cell([r["s_per_step"] for r in ok], "{:.3f}"), len(ok)])
    return rows


NOTE = ("completions/step counts the sampled completions that are trained on or refilled (dynamic "
        "sampling); remax's greedy baseline (one more completion per prompt, +16) and segment_spo's "
        "Monte-Carlo continuations are generated on top and not counted here.")
HEADERS = ["preset", "greedy acc", "pass@1", "pass@8", "entropy (last 20%)", "zero-variance groups",
           "completions/step", "s/step", "seeds"]


def plot(runs: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(18, 5.5))
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    presets = sorted({r["preset"] for r in runs if "failed" not in r})
    cmap = __import__("matplotlib").colormaps["tab20"]
    for i, preset in enumerate(presets):
        ok = [r for r in runs if r["preset"] == preset and "failed" not in r]
        color, style = cmap(i % 20), "-" if i < 20 else "--"
        for ax, key in ((axes[0], "accuracy"), (axes[1], "pass@8")):
            steps = [e["step"] for e in ok[0]["evals"]]
            ys = [statistics.fmean(r["evals"][j].get(key, float("nan")) for r in ok) for j in range(len(steps))]
            ax.plot(steps, ys, style, color=color, label=preset)
        n = min(len(r["entropy"]) for r in ok)
        ent = [statistics.fmean(r["entropy"][j] for r in ok) if all(r["entropy"][j] is not None for r in ok)
               else float("nan") for j in range(n)]
        axes[2].plot(range(1, n + 1), ent, style, color=color, label=preset, linewidth=0.8)
    for ax, title in zip(axes, ("greedy accuracy (held-out)", "pass@8 (8 samples, T=1)", "policy entropy (train batches)")):
        ax.set_title(title)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))


def main() -> None:
    from postrl.algorithms import PRESETS

    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_algorithms",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="all", help=f"comma-separated, or all ({len(PRESETS.names())})")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--eval-limit", type=int, default=200)
    parser.add_argument("--mini-batches", type=int, default=4,
                        help="optimizer updates per rollout batch (1: every update on-policy, where the "
                             "ratio-based losses coincide)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--quick", action="store_true", help="10 steps, 1 seed, 50 problems (a smoke run)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--write-docs", action="store_true", help=f"write the table to {DOCS_TABLE}")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds, args.eval_every, args.eval_limit = 10, "0", 5, 50
    presets = PRESETS.names() if args.presets == "all" else args.presets.split(",")
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        parser.error(f"unknown preset {', '.join(unknown)}; valid: {', '.join(PRESETS.names())}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    root = out / ("algorithms_quick" if args.quick else f"algorithms_mb{args.mini_batches}")

    from benchmarks.vs_trl import prepare_model

    model = str(prepare_model(SIZES["small"], out))
    jobs = [(p, s) for s in seeds for p in presets]
    print(f"{len(jobs)} runs ({len(presets)} presets x {len(seeds)} seeds), {args.steps} steps each, "
          f"{args.jobs} at a time; start model {model}", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda job: run_one(*job, model, args, root), jobs))

    table = markdown_table(HEADERS, summarize(runs))
    stamp = machine_stamp()
    head = (f"{stamp['date']}, {stamp['cpu']}, torch {stamp['torch']}: `python -m benchmarks.compare_algorithms "
            f"--steps {args.steps} --seeds {args.seeds} --mini-batches {args.mini_batches}` — the demo's RL stage "
            f"({args.steps} steps of 16 prompts x 8 completions, {args.mini_batches} updates per batch, from the SFT warm start, greedy accuracy {runs[0]['start']['accuracy']:.3f} at step 0), "
            f"evaluated on {args.eval_limit} held-out problems. Mean over seeds (min-max).")
    text = head + "\n\n" + table + "\n\n" + NOTE + "\n"
    (out / "compare_algorithms.json").write_text(json.dumps({"machine": stamp, "args": vars(args), "runs": runs},
                                                            indent=1))
    (out / "compare_algorithms.md").write_text(text)
    plot(runs, out / "compare_algorithms.png")
    print("\n" + text + f"\nwritten: {out / 'compare_algorithms.md'}, {out / 'compare_algorithms.png'}")
    if args.write_docs:
        DOCS_TABLE.write_text(text)
        plot(runs, DOCS_PLOT)
        print(f"written: {DOCS_TABLE}, {DOCS_PLOT} (run `make docs` to put the table into docs/algorithms.md)")


if __name__ == "__main__":
    main()
