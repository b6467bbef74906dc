"""The `postrl` command: train | sft | rm | pref | raft | eval | demo | algos | plot | bench.

Heavy imports (torch, transformers) happen inside each command, so `postrl --help` answers at
once. Expected failures (bad config, bad data, missing files) print one clear message and exit
with status 2; set POSTRL_DEBUG=1 for the traceback. A run stopped on purpose exits with 3 (a
fault: non-finite steps, disk full) or 128 + the signal (SIGINT 130, SIGTERM 143) after saving a
checkpoint (postrl/run_stop.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from postrl.run_stop import RunStopped


def _console():
    from rich.console import Console

    return Console(stderr=False, highlight=False)


# command -> (config schema in postrl.config, trainer module in postrl.trainers); each trainer
# module has `train(cfg, resume=, console=) -> summary`
# command -> (config class, trainer module). A class name alone lives in postrl.config; a
# "module:Class" path lets a trainer keep its own config section next to it.
TRAINERS = {"train": ("RLConfig", "rl"), "sft": ("SFTConfig", "sft"), "rm": ("RMConfig", "rm"),
            "pref": ("PrefConfig", "pref"), "raft": ("RaftConfig", "raft"),
            "online": ("postrl.trainers.online_config:OnlineConfig", "online_pref"),
            "prm": ("postrl.trainers.prm_config:PrmConfig", "prm")}


def config_schema(command: str):
    """The config class of a trainer command (see TRAINERS)."""
    import importlib

    name = TRAINERS[command][0]
    module, _, cls = name.rpartition(":")
    return getattr(importlib.import_module(module or "postrl.config"), cls)


def cmd_trainer(args) -> None:
    import importlib

    from postrl import config

    module = TRAINERS[args.command][1]
    cfg = config.load_config(args.config, _overrides(args), schema=config_schema(args.command))
    summary = importlib.import_module(f"postrl.trainers.{module}").train(cfg, resume=args.resume,
                                                                         console=_console())
    _print_summary(summary, cfg.run_dir)


def cmd_eval(args) -> None:
    from postrl.config import RLConfig, load_config
    from postrl.trainers.evaluate import evaluate
    from postrl.trainers.rl import encode_split
    from postrl.learner.models import load_model, load_tokenizer, resolve_device
    from postrl.rewards import RewardSet
    from postrl.rollout.engines import build_engine

    overrides = [f"model.name_or_path={args.model}", f"data.eval_source={args.data}",
                 f"data.eval_split={args.split}"] + list(args.set or [])
    if args.reward:
        overrides.append(f"rewards={json.dumps([{'name': r} for r in args.reward])}")
    if args.limit:
        overrides.append(f"eval.limit={args.limit}")
    cfg = load_config(args.config, overrides, schema=RLConfig)
    device = resolve_device(cfg.model.device)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model, tokenizer, device)
    rows, ids = encode_split(cfg, tokenizer, cfg.data.eval_split, cfg.data.eval_source, cfg.eval.limit)
    engine = build_engine(cfg.rollout, model, tokenizer)
    out = evaluate(engine, tokenizer, rows, ids, RewardSet(cfg.rewards),
                   max_new_tokens=args.max_new_tokens or cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
                   stop=cfg.rollout.stop, ks=args.k or cfg.eval.k, temperature=cfg.rollout.temperature,
                   top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k,
                   success_threshold=cfg.algorithm.success_threshold, seed=cfg.seed)
    out = {"model": args.model, "data": args.data, "split": args.split, **out}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    _print_summary(out, None, title="evaluation")


def cmd_demo(args) -> None:
    from postrl.trainers.demo import run_demo

    run_demo(args.out, console=_console(), seed=args.seed)


def cmd_algos(args) -> None:
    from postrl.algorithms.docs import catalog

    entries = catalog()
    if args.json:
        print(json.dumps(entries, indent=1))
        return
    from rich.table import Table

    console = _console()
    for kind, items in entries.items():
        table = Table(title=kind, show_lines=False, title_justify="left")
        for col in ("name", "summary", "paper"):
            table.add_column(col, overflow="fold")
        for e in items:
            paper = e["paper"] + (f" (arXiv {e['arxiv']})" if e["arxiv"] else "")
            table.add_row(e["name"], e["summary"], paper)
        console.print(table)


def cmd_plot(args) -> None:
    from postrl.tracking.plot import plot_run

    path = plot_run(args.run_dir, out=args.out)
    print(path)


def cmd_bench(args) -> None:
    import subprocess
    from pathlib import Path

    import postrl

    root = find_benchmarks_root([Path.cwd(), Path(postrl.__file__).resolve().parent])
    available = list_benchmarks(root / "benchmarks")
    if args.list:
        width = max(map(len, available), default=0)
        for name, doc in available.items():
            print(f"{name:<{width}}  {doc}")
        return
    if args.name not in available:
        given = f"unknown benchmark {args.name!r}" if args.name else "give a benchmark name"
        raise ValueError(f"{given}; valid names: {', '.join(available) or '(none)'} (see postrl bench --list)")
    # the benchmark's own exit status becomes ours; its output goes straight to the terminal
    code = subprocess.call([sys.executable, "-m", f"benchmarks.{args.name}", *args.args], cwd=root)
    if code:
        raise SystemExit(code)


def find_benchmarks_root(starts):
    """The first directory holding `benchmarks/__init__.py`, walking up from each of `starts`."""
    for start in starts:
        for d in (start, *start.parents):
            if (d / "benchmarks" / "__init__.py").is_file():
                return d
    raise FileNotFoundError("no benchmarks/ folder above " + " or ".join(str(s) for s in starts)
                            + ": the benchmarks live in the postrl source checkout, not in the installed "
                            "package; run `postrl bench` from inside a clone of the repository")


def list_benchmarks(folder) -> dict[str, str]:
    """name -> first docstring line of every runnable module in `folder` (one with a
    `if __name__ == "__main__":` block), read with `ast` so nothing heavy is imported."""
    import ast

    out = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(_is_main_guard(node) for node in tree.body):
            doc = ast.get_docstring(tree) or ""
            out[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ""
    return out


def _is_main_guard(node) -> bool:
    import ast

    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    sides = [node.test.left, *node.test.comparators]
    return any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides) and any(
        isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)


def _overrides(args) -> list[str]:
    out = list(args.set or [])
    if getattr(args, "out", None):
        out.append(f"output_dir={args.out}")
    return out


def _print_summary(summary: dict, run_dir, title: str = "summary") -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("key")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        if k.startswith("last/"):
            continue
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    console = _console()
    console.print(table)
    if run_dir is not None:
        console.print(f"run directory: {run_dir}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="postrl", description="Reinforcement-learning post-training "
                                     "of language models: every method as a small, named, tested part of one loop.")
    sub = parser.add_subparsers(dest="command", required=True)

    def config_cmd(name, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("config", help="YAML config file")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config key, dotted (e.g. --set rollout.n=8); repeatable")
        p.add_argument("--out", help="run directory (same as --set output_dir=DIR)")
        p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
        p.set_defaults(fn=cmd_trainer)

    config_cmd("train", "online RL from a YAML config")
    config_cmd("sft", "supervised fine-tuning from a YAML config")
    config_cmd("rm", "Bradley-Terry reward-model training on preference pairs")
    config_cmd("pref", "offline preference optimisation (DPO, ...) from a YAML config")
    config_cmd("raft", "rejection-sampling self-improvement (RAFT / ReST): sample, filter by reward, SFT")
    config_cmd("online", "online / iterative preference training: sample pairs from the policy, judge, DPO-style update")
    config_cmd("prm", "process reward model training on step-labelled solutions (TRL stepwise format)")

    p = sub.add_parser("eval", help="greedy pass@1 and sampled pass@k of a model on a dataset")
    p.add_argument("--model", required=True, help="model directory or hub id")
    p.add_argument("--data", required=True, help="task:NAME, a data file, a saved dataset dir or a hub name")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, help="evaluate the first N problems")
    p.add_argument("--k", type=int, action="append", help="report sampled pass@k (repeatable)")
    p.add_argument("--reward", action="append", help="reward function deciding correctness (default exact_match)")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--config", help="optional YAML config for data/rollout options")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override; repeatable")
    p.add_argument("--out", help="write the results as JSON here")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("demo", help="the embedded default: tiny model, SFT warm start, GRPO, before/after accuracy")
    p.add_argument("--out", default="runs/demo", help="directory for everything the demo writes")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("algos", help="list every registered method with its paper")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_algos)

    p = sub.add_parser("plot", help="PNG curves from a run's metrics.jsonl")
    p.add_argument("run_dir")
    p.add_argument("--out", help="PNG path (default RUN_DIR/curves.png)")
    p.set_defaults(fn=cmd_plot)

    p = sub.add_parser("bench", help="run a benchmark script of the source checkout (benchmarks/NAME.py)",
                       description="Runs `python -m benchmarks.NAME ARGS...` with the repository root as the "
                       "working directory (so relative paths in ARGS are relative to it).")
    p.add_argument("--list", action="store_true", help="list the benchmarks with their one-line descriptions")
    p.add_argument("name", nargs="?", help="benchmark module, e.g. vs_trl")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the benchmark (e.g. --quick)")
    p.set_defaults(fn=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except RunStopped as e:  # the run saved what it could; the message says what and how to resume
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        if os.environ.get("POSTRL_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
