"""Side by side: the same GRPO work with TRL's GRPOTrainer and with `postrl train`, plus the roofline.

    python -m benchmarks.vs_trl [--quick] [--sizes small,10m,long] [--steps N]

For each size (see `benchmarks.common.SIZES`) both frameworks run one after the other, each in
its own process, from the same saved model directory (`build_model` + `save_pretrained`; for
`small` the demo's SFT warm start, made once by `postrl sft` and cached in runs/bench/), on the
same prompts (postrl's task:arithmetic train split through the same chat template; the token ids
are checked equal before anything runs), with the same reward, group size, prompts per step,
completion budget, sampling (temperature 1, top_p 1, no top_k), optimizer, grad clip, KL off,
one update per batch and the same number of steps.

Loss aggregation: postrl `token_mean` with TRL `loss_type="dapo"`. Both divide the summed
per-token loss by the number of completion tokens of the whole generation batch, under any
micro-batching, so they are the same objective exactly (TRL's "grpo", the per-sequence mean, is
only equal to postrl's seq_mean_token_mean when every accumulation window has the same number of
sequences); it is also TRL's default.

Reported per framework and size: wall seconds per step (median after a warm-up step; TRL's
from `on_step_begin` to `on_step_end`, postrl's `time/step`), completion tokens per second
(completion tokens of the timed steps / their seconds), peak RSS of the training process (its
own `ru_maxrss`, from wait4), the whole process's wall time (imports and set-up included), and
the final greedy score of both models on the same held-out prompts by postrl's `evaluate`:
exact-match accuracy for `small`; for `10m` (random init) the mean digit-fraction reward,
labelled as such. Then the ratios postrl/TRL and the roofline (`benchmarks.roofline`). Results
go to runs/bench/vs_trl.json; the tables are printed as markdown.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from postrl.rewards.builtin import exact_match

from benchmarks import roofline
from benchmarks.common import (SIZES, Size, digit_fraction, machine_stamp, markdown_table, median_after_warmup,
                               rl_config, run_measured, tail)

OUT = Path("runs/bench")
CHILD_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "POSTRL_DEBUG": "1"}


# ------------------------------------------------------------------------------- TRL side
# postrl's built-in rewards already take TRL's keyword call (prompts=, completions=, columns...),
# so TRL scores with the very same function, not a copy of it.
TRL_REWARDS = {"exact_match": exact_match, "digit_fraction": digit_fraction}


def trl_arguments(size: Size, steps: int, output_dir: str) -> dict:
    """GRPOConfig keyword arguments matching `common.rl_config(size, ...)`.

    One generation batch of prompts x n completions per optimizer step, trained in one
    micro-batch (no gradient accumulation), as postrl does with micro_batch_size = rows.
    TRL's defaults that differ from postrl's are set explicitly: gradient checkpointing off
    (TRL defaults it on), bf16 off (TRL defaults it on), constant schedule (HF: linear decay).
    """
    return dict(
        output_dir=output_dir, use_cpu=True, bf16=False, fp16=False, report_to="none", save_strategy="no",
        use_vllm=False, gradient_checkpointing=False, seed=0, max_steps=steps,
        per_device_train_batch_size=size.rows, gradient_accumulation_steps=1, num_generations=size.n,
        max_completion_length=size.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        beta=0.0, num_iterations=1, epsilon=0.2, loss_type="dapo", scale_rewards="group",
        mask_truncated_completions=False, learning_rate=size.lr, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch", weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        max_grad_norm=1.0, logging_steps=1, disable_tqdm=True, dataloader_num_workers=0, log_completions=False,
    )


def trl_worker(spec_path: str) -> None:
    """The TRL training process: train, save the final model, write per-step timings."""
    spec = json.loads(Path(spec_path).read_text())
    size = SIZES[spec["size"]]
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class StepTimes(TrainerCallback):
        """One optimizer step = generate, score, one forward/backward, optimizer step."""

        def __init__(self):
            self.start, self.seconds = 0.0, []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.start)

    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    rows = [json.loads(line) for line in Path(spec["train_file"]).read_text().splitlines()]
    timer = StepTimes()
    trainer = GRPOTrainer(model=model, reward_funcs=TRL_REWARDS[size.reward], train_dataset=Dataset.from_list(rows),
                          args=GRPOConfig(**trl_arguments(size, spec["steps"], spec["out_dir"])),
                          processing_class=tokenizer, callbacks=[timer])

    record = {"rollout_s": [], "completions": [], "completion_tokens": [], "prompt_tokens": []}
    generate = trainer._generate  # instance attribute wins over the method: times the rollout only

    def timed_generate(prompts):
        t0 = time.perf_counter()
        out = generate(prompts)
        record["rollout_s"].append(time.perf_counter() - t0)
        prompt_ids, completion_ids = out[0], out[1]
        record["completions"].append(len(completion_ids))
        record["completion_tokens"].append(sum(len(c) for c in completion_ids))
        record["prompt_tokens"].append(sum(len(p) for p in prompt_ids))
        return out

    trainer._generate = timed_generate
    trainer.train()
    final = Path(spec["out_dir"]) / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(final)
    record.update(step_s=timer.seconds, model_dir=str(final))
    (Path(spec["out_dir"]) / "result.json").write_text(json.dumps(record, indent=1))


# ------------------------------------------------------------------------------ shared set-up
def prepare_model(size: Size, out: Path) -> Path:
    """The saved starting model of `size`: the random init, or its (cached) `postrl sft`."""
    from postrl.learner.models import quiet_transformers
    from postrl.learner.tiny import build_model, build_tokenizer

    quiet_transformers()
    init = out / f"init_{size.name}"
    tok = build_tokenizer()
    build_model(tok, **size.arch, init_seed=0).save_pretrained(init)
    tok.save_pretrained(init)
    if not size.sft:
        return init
    from postrl.config import SFTConfig, dump_config, resolve
    from postrl.trainers.demo import SFT, TINY

    assert {"arch": "qwen2", **size.arch} == TINY, "the small size is the demo's model"
    sft_dir = out / f"sft_{size.name}"
    final = sft_dir / "final"
    if (final / "config.json").exists():
        print(f"[{size.name}] SFT warm start: cached {final}", flush=True)
        return final
    cfg = resolve(SFTConfig, SFT, {"model.name_or_path": str(init), "logging.progress": False},
                  source="vs_trl sft config")
    sft_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / f"sft_{size.name}.yaml")
    print(f"[{size.name}] SFT warm start: postrl sft, {cfg.train.steps} steps (once; cached in {final})",
          flush=True)
    m = run_measured([sys.executable, "-m", "postrl.cli", "sft", str(out / f"sft_{size.name}.yaml"),
                      "--out", str(sft_dir), "--resume"], cwd=".", log=out / f"sft_{size.name}.log",
                     # set-up, not measured: one thread, because two threads spin-wait badly when
                     # other processes share the cores (then a step is 10-100x slower)
                     env={**CHILD_ENV, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    if m.exit_code != 0:
        raise SystemExit(f"postrl sft failed (exit {m.exit_code}):\n{tail(out / f'sft_{size.name}.log')}")
    return final


def prepare_prompts(size: Size, model_dir: Path, train_file: Path) -> float:
    """Write the train prompts for TRL; check TRL's tokenisation equals postrl's; mean prompt tokens."""
    from transformers import AutoTokenizer

    from postrl.config import RLConfig, resolve
    from postrl.data import encode_prompts, load_prompt_dataset
    from postrl.learner.models import load_tokenizer

    cfg = resolve(RLConfig, rl_config(size, str(model_dir), 1), source="vs_trl")
    data = load_prompt_dataset(cfg.data, split=cfg.data.split)
    ids, kept = encode_prompts(load_tokenizer(cfg.model), data.rows, cfg.data)
    rows = [data.rows[i] for i in kept]
    # what GRPOTrainer._tokenize_prompts does with conversational prompts
    trl_ids = AutoTokenizer.from_pretrained(model_dir).apply_chat_template(
        conversation=[r.prompt for r in rows[:256]], add_generation_prompt=True, tokenize=True,
        return_dict=True)["input_ids"]
    if [list(x) for x in trl_ids] != ids[:256]:
        raise SystemExit("TRL's and postrl's prompt token ids differ; the comparison would not be fair")
    train_file.parent.mkdir(parents=True, exist_ok=True)
    train_file.write_text("".join(json.dumps({"prompt": r.prompt, "answer": r.answer}) + "\n" for r in rows))
    return statistics.fmean(len(x) for x in ids)


def evaluate_model(model_dir: Path, size: Size, limit: int) -> dict:
    """Greedy evaluation by postrl's `evaluate` on the first `limit` test-split prompts."""
    from postrl.config import RLConfig, resolve
    from postrl.learner.models import load_model, load_tokenizer, resolve_device
    from postrl.rewards import RewardSet
    from postrl.rollout.engines import build_engine
    from postrl.trainers.evaluate import evaluate
    from postrl.trainers.rl import encode_split

    cfg = resolve(RLConfig, rl_config(size, str(model_dir), 1), source="vs_trl eval")
    tok = load_tokenizer(cfg.model)
    model = load_model(cfg.model, tok, resolve_device(cfg.model.device))
    rows, ids = encode_split(cfg, tok, "test", None, limit)  # the rows `postrl eval` would score
    engine = build_engine(cfg.rollout, model, tok)
    return evaluate(engine, tok, rows, ids, RewardSet(cfg.rewards), max_new_tokens=size.max_new_tokens, seed=0)


# ------------------------------------------------------------------------------------ runs
def run_postrl(size: Size, model_dir: Path, steps: int, run_dir: Path) -> dict:
    import yaml

    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    config = run_dir.parent / "postrl.yaml"
    config.write_text(yaml.safe_dump(rl_config(size, str(model_dir), steps), sort_keys=False))
    log = run_dir.parent / "postrl.log"
    m = run_measured([sys.executable, "-m", "postrl.cli", "train", str(config), "--out", str(run_dir)],
                     cwd=".", log=log, env=CHILD_ENV)
    if m.exit_code != 0:
        raise SystemExit(f"postrl train failed (exit {m.exit_code}):\n{tail(log)}")
    steps_m = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "step_s": [s["time/step"] for s in steps_m], "rollout_s": [s["time/rollout"] for s in steps_m],
        "learner_s": [s["time/learner"] for s in steps_m], "completions": [size.rows] * len(steps_m),
        "completion_tokens": [s["completion_len/mean"] * size.rows for s in steps_m],
        "reward": [s["reward/mean"] for s in steps_m],
        "model_dir": str(run_dir / "checkpoints" / f"step_{steps:06d}"),
        "peak_rss_mb": m.max_rss_mb, "process_s": m.wall_s, "log": str(log),
    }


def run_trl(size: Size, model_dir: Path, steps: int, out_dir: Path, train_file: Path) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    spec = out_dir.parent / "trl_spec.json"
    spec.write_text(json.dumps({"size": size.name, "model_dir": str(model_dir), "steps": steps,
                                "out_dir": str(out_dir), "train_file": str(train_file)}))
    log = out_dir.parent / "trl.log"
    m = run_measured([sys.executable, "-m", "benchmarks.vs_trl", "--trl-worker", str(spec)],
                     cwd=".", log=log, env=CHILD_ENV)
    if m.exit_code != 0:
        raise SystemExit(f"TRL GRPOTrainer failed (exit {m.exit_code}):\n{tail(log)}")
    r = json.loads((out_dir / "result.json").read_text())
    if len(r["step_s"]) != steps or any(c != size.rows for c in r["completions"]):
        raise SystemExit(f"TRL ran {len(r['step_s'])} steps with {r['completions']} completions per step; "
                         f"expected {steps} x {size.rows}")
    r["learner_s"] = [s - g for s, g in zip(r["step_s"], r["rollout_s"])]  # scoring included (small)
    r.update(peak_rss_mb=m.max_rss_mb, process_s=m.wall_s, log=str(log))
    return r


def summarize(r: dict) -> dict:
    """Medians after the warm-up step; tokens/s over the timed steps."""
    timed = slice(1, None) if len(r["step_s"]) > 1 else slice(None)
    return {"s_per_step": median_after_warmup(r["step_s"]), "rollout_s": median_after_warmup(r["rollout_s"]),
            "learner_s": median_after_warmup(r["learner_s"]),
            "tokens_per_s": sum(r["completion_tokens"][timed]) / sum(r["step_s"][timed]),
            "completion_len": statistics.fmean(r["completion_tokens"][timed]) / r["completions"][0],
            "completions_per_step": r["completions"][0], "peak_rss_mb": r["peak_rss_mb"],
            "process_s": r["process_s"], "steps": len(r["step_s"])}


def run_size(size: Size, steps: int, out: Path, eval_limit: int) -> dict:
    d = out / size.name
    start = prepare_model(size, out)
    prompt_tokens = prepare_prompts(size, start, d / "train.jsonl")
    res: dict = {"size": size.name, "start_model": str(start), "steps": steps, "rows": size.rows,
                 "prompt_tokens": prompt_tokens, "eval_problems": eval_limit,
                 "score": "greedy exact-match accuracy" if size.reward == "exact_match"
                 else "greedy mean digit-fraction reward (not correctness)"}
    for name, run in (("postrl", lambda: run_postrl(size, start, steps, d / "postrl")),
                      ("trl", lambda: run_trl(size, start, steps, d / "trl", d / "train.jsonl"))):
        print(f"[{size.name}] {name}: {steps} steps of {size.prompts} x {size.n} completions, "
              f"<= {size.max_new_tokens} tokens (log {d / (name + '.log')})", flush=True)
        raw = run()
        res[name] = {**summarize(raw), "raw": raw}
        print(f"[{size.name}] {name}: {res[name]['s_per_step']:.3f} s/step, {res[name]['peak_rss_mb']:.0f} MB peak "
              f"RSS, {res[name]['process_s']:.0f} s process", flush=True)
    key = "accuracy" if size.reward == "exact_match" else "reward_mean"
    for name, model_dir in (("start", start), ("postrl", res["postrl"]["raw"]["model_dir"]),
                            ("trl", res["trl"]["raw"]["model_dir"])):
        ev = evaluate_model(Path(model_dir), size, eval_limit)
        (res.setdefault("eval", {}))[name] = ev
        if name != "start":
            res[name]["score"] = ev[key]
    res["start_score"] = res["eval"]["start"][key]
    return res


# ---------------------------------------------------------------------------------- report
def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


COMPARE = ["size", "framework", "s/step", "completion tok/s", "mean completion len", "completions/step",
           "peak RSS MB", "process s", "score (start -> final)"]


def compare_rows(res: dict) -> list[list]:
    rows = []
    for fw in ("trl", "postrl"):
        r = res[fw]
        rows.append([res["size"], "TRL" if fw == "trl" else "postrl", r["s_per_step"], r["tokens_per_s"],
                     r["completion_len"], r["completions_per_step"], r["peak_rss_mb"], r["process_s"],
                     f"{res['start_score']:.3f} -> {r['score']:.3f}"])
    p, t = res["postrl"], res["trl"]
    rows.append([res["size"], "postrl/TRL", ratio(p["s_per_step"], t["s_per_step"]),
                 ratio(p["tokens_per_s"], t["tokens_per_s"]), ratio(p["completion_len"], t["completion_len"]), 1.0,
                 ratio(p["peak_rss_mb"], t["peak_rss_mb"]), ratio(p["process_s"], t["process_s"]),
                 ratio(p["score"], t["score"])])
    return rows


def roofline_rows(res: dict, peak: float) -> list[list]:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(res["start_model"])
    rows = []
    for fw in ("trl", "postrl"):
        r = res[fw]
        row = roofline.roofline_row(config, peak, rows=res["rows"], prompt_tokens=res["prompt_tokens"],
                                    completion_tokens=r["completion_len"], learner_s=r["learner_s"],
                                    rollout_s=r["rollout_s"])
        r["roofline"] = row
        rows.append(roofline.roofline_cells(res["size"], "TRL" if fw == "trl" else "postrl", config, row,
                                            r["learner_s"], r["rollout_s"]))
    return rows


def report(results: dict) -> str:
    m, peak = results["machine"], results["peak_flops"]
    lines = [f"{m['date']}, {m['cpu']}, {m['cpus']} cores (torch threads: {m['torch_threads']}), torch {m['torch']}, "
             f"transformers {m['transformers']}, trl {m['trl']}, python {m['python']}", "",
             roofline.peak_line(peak), ""]
    compare, roof = [], []
    for res in results["sizes"].values():
        compare += compare_rows(res)
        roof += roofline_rows(res, peak["float32"])
    lines += [markdown_table(COMPARE, compare), ""]
    for res in results["sizes"].values():
        lines.append(f"- {res['size']}: {res['steps']} steps, median after 1 warm-up step; score = {res['score']} "
                     f"on {res['eval_problems']} held-out prompts")
    lines += ["", "TRL learner seconds = step - generate (includes reward scoring)", "",
              markdown_table(roofline.ROOFLINE_HEADERS, roof)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vs_trl", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps and a small evaluation (a smoke run)")
    parser.add_argument("--sizes", default="small,10m,long", help=f"comma-separated, from {', '.join(SIZES)}")
    parser.add_argument("--steps", type=int, help="RL steps per framework (default: per size, see common.SIZES)")
    parser.add_argument("--out", default=str(OUT), help="directory for models, runs, logs and vs_trl.json")
    parser.add_argument("--threads", type=int, help="torch threads of every process (default: torch's, one per "
                        "core); 1 keeps numbers sane when other jobs share the cores")
    parser.add_argument("--trl-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trl_worker:
        trl_worker(args.trl_worker)
        return
    unknown = [s for s in args.sizes.split(",") if s not in SIZES]
    if unknown:
        parser.error(f"unknown size {', '.join(unknown)}; valid sizes: {', '.join(SIZES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        CHILD_ENV.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))

    results = {"machine": machine_stamp(), "quick": args.quick}
    results["peak_flops"] = roofline.peaks(args.quick)  # first, while nothing else runs
    print(roofline.peak_line(results["peak_flops"]), flush=True)
    results["sizes"] = {}
    for name in args.sizes.split(","):
        size = SIZES[name]
        steps = args.steps or (size.quick_steps if args.quick else size.steps)
        limit = size.quick_eval_limit if args.quick else size.eval_limit
        results["sizes"][name] = run_size(size, steps, out, limit)
    text = report(results)
    (out / "vs_trl.json").write_text(json.dumps(results, indent=1))
    (out / "vs_trl.md").write_text(text + "\n")
    print()
    print(text)
    print(f"\nwritten: {out / 'vs_trl.json'}, {out / 'vs_trl.md'}")


if __name__ == "__main__":
    main()
