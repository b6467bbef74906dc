"""Soak: a long `postrl train` run with periodic checkpoints, watched for leaks and drift.

    python -m benchmarks.soak [--steps 1000] [--checkpoint-every 50] [--interval 2]

Runs the demo's RL stage (GRPO, 16 prompts x 8 completions of <= 8 tokens, exact match, lr 1e-4)
from the demo's SFT warm start (runs/bench/sft_small/final) for `--steps` steps in a child process
(one torch thread), a checkpoint every `--checkpoint-every` steps (keep_last 2: every save also
prunes), an evaluation every 250 steps. Every `--interval` seconds it samples the child's resident
memory and its open file descriptors (psutil), and at the end reads the per-step times from
metrics.jsonl. Reported:

- RSS: after warm-up (the median of the samples taken between steps 50 and 100), the last
  sample, the maximum and the growth between the two (a leak grows with the step count);
- step time: median of steps 51-150 against the median of the last 100, and the drift in percent;
- open file descriptors: first, last and maximum sample.

Writes runs/bench/soak/soak.json and soak.png (RSS, descriptors and step time against the step).
Not a test: it asserts nothing, it measures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ONE_THREAD_ENV, SIZES, machine_stamp, markdown_table

OUT = Path("runs/bench/soak")


def config(model: str, steps: int, every: int, run_dir: Path) -> dict:
    from postrl.trainers.demo import GRPO

    return {**GRPO, "name": "soak", "output_dir": str(run_dir), "model": {"name_or_path": model},
            "train": {**GRPO["train"], "steps": steps},
            "eval": {"limit": 200, "every": 250},
            "checkpoint": {"every": every, "keep_last": 2},
            "logging": {"console_every": 100000, "progress": False}}


def watch(cmd: list[str], log: Path, metrics: Path, interval: float) -> tuple[int, list[dict]]:
    """Run `cmd`, sampling its RSS and open descriptors; each sample also records the last logged step."""
    import os

    import psutil

    samples = []
    with open(log, "w") as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **ONE_THREAD_ENV})
        proc = psutil.Process(child.pid)
        t0 = time.perf_counter()
        while child.poll() is None:
            try:
                rss, fds = proc.memory_info().rss / 2**20, proc.num_fds()
            except psutil.NoSuchProcess:
                break
            samples.append({"t": time.perf_counter() - t0, "rss_mb": rss, "fds": fds, "step": last_step(metrics)})
            time.sleep(interval)
        return child.wait(), samples


def last_step(metrics: Path) -> int:
    if not metrics.exists():
        return 0
    with open(metrics, "rb") as f:
        f.seek(max(0, f.seek(0, 2) - 4096))
        lines = [x for x in f.read().decode(errors="replace").splitlines() if x.startswith("{")]
    for line in reversed(lines):
        try:
            return int(json.loads(line).get("step", 0))
        except json.JSONDecodeError:
            continue
    return 0


def summarize(samples: list[dict], steps: list[dict]) -> dict:
    warm = [s["rss_mb"] for s in samples if 50 <= s["step"] <= 100] or [samples[len(samples) // 10]["rss_mb"]]
    times = [s["time/step"] for s in steps]
    early, late = statistics.median(times[50:150]), statistics.median(times[-100:])
    return {"rss_warm_mb": statistics.median(warm), "rss_last_mb": samples[-1]["rss_mb"],
            "rss_max_mb": max(s["rss_mb"] for s in samples),
            "rss_growth_mb": samples[-1]["rss_mb"] - statistics.median(warm),
            "step_s_early": early, "step_s_late": late, "step_drift_pct": 100 * (late - early) / early,
            "fds_first": samples[0]["fds"], "fds_last": samples[-1]["fds"], "fds_max": max(s["fds"] for s in samples),
            "steps": len(steps), "samples": len(samples)}


def plot(samples: list[dict], steps: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4))
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    axes[0].plot([s["step"] for s in samples], [s["rss_mb"] for s in samples])
    axes[0].set_title("resident memory (MB)")
    axes[1].plot([s["step"] for s in samples], [s["fds"] for s in samples])
    axes[1].set_title("open file descriptors")
    axes[2].plot([s["step"] for s in steps], [s["time/step"] for s in steps], linewidth=0.5)
    axes[2].set_title("seconds per step")
    for ax in axes:
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))


def main() -> None:
    from benchmarks.vs_trl import prepare_model

    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between memory samples")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    if args.steps < 200:
        parser.error("--steps must be >= 200 (the drift compares steps 51-150 with the last 100)")
    out = Path(args.out)
    run_dir = out / "run"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = str(prepare_model(SIZES["small"], out.parent))
    path = out / "soak.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config(model, args.steps, args.checkpoint_every, run_dir), sort_keys=False))
    t0 = time.perf_counter()
    code, samples = watch([sys.executable, "-m", "postrl.cli", "train", str(path)], out / "soak.log",
                          run_dir / "metrics.jsonl", args.interval)
    if code != 0:
        raise SystemExit(f"the soak run failed (exit {code}); see {out / 'soak.log'}")
    steps = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "time/step" in s]
    summary = {**summarize(samples, steps), "wall_s": time.perf_counter() - t0, "args": vars(args),
               "machine": machine_stamp()}
    (out / "soak.json").write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
    plot(samples, steps, out / "soak.png")
    print(markdown_table(["quantity", "value"], [
        ["steps (checkpoint every)", f"{summary['steps']} ({args.checkpoint_every})"],
        ["RSS after warm-up / last / max (MB)",
         f"{summary['rss_warm_mb']:.0f} / {summary['rss_last_mb']:.0f} / {summary['rss_max_mb']:.0f}"],
        ["RSS growth after warm-up (MB)", f"{summary['rss_growth_mb']:+.1f}"],
        ["s/step, steps 51-150 -> last 100", f"{summary['step_s_early']:.3f} -> {summary['step_s_late']:.3f} "
                                              f"({summary['step_drift_pct']:+.1f}%)"],
        ["open descriptors first / last / max", f"{summary['fds_first']} / {summary['fds_last']} / {summary['fds_max']}"],
        ["wall time (s)", f"{summary['wall_s']:.0f}"]]))


if __name__ == "__main__":
    main()
