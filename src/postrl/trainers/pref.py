"""`postrl pref`: offline preference optimisation (DPO and every loss in PREFERENCE_LOSSES).

    rows -> fit to the loss's format -> token ids -> reference log-probs (once, cached)
         -> per step: sampled examples -> policy log-probs -> PrefInputs -> loss -> update

No loss name appears here: what a loss needs comes from its registry entry ("reference" loads a
reference model, for one pass before training, and never otherwise; "token_logps" adds per-token
values; "kto_kl" adds the mismatched-pair reference point; "online_kl" samples one response per
example from the current policy each step and keeps the reference model loaded to score it,
`pref_online.py`; "rationales" adds log pi(r | x, y_w, y_l), `pref_rationale.py`). `data.select`
first keeps the easy or hard pairs by reward margin (MPO, `data/pair_select.py`). Micro-batches
accumulate gradients normalised by the whole batch, so accumulation equals one big batch. Data
order comes from the `uniform` sampler and online samples from a per-step seed, so a resumed run
sees the same batches and ends with the same weights.
"""

from __future__ import annotations

import functools
import json
import math
import time
from typing import Any

import torch

from postrl.algorithms import PREFERENCE_LOSSES
from postrl.config import PrefConfig, RewardSpec, RolloutSection
from postrl.data.chat import encode_prompts
from postrl.data.pair_select import select_pairs
from postrl.data.preference import load_preference_rows
from postrl.learner.checkpoint import load_checkpoint, save_checkpoint
from postrl.learner.learner import build_optimizer, build_scheduler, logprob_fn, use_bf16
from postrl.learner.models import load_model, load_reference, load_tokenizer, reference_context, resolve_device
from postrl.samplers import SAMPLERS
from postrl.tracking import MetricsLogger
from postrl.trainers import pref_batch as pb
from postrl.trainers.pref_data import add_kl_pairs, encode_examples, fit_rows
from postrl.trainers.pref_online import OnlineKL, step_seed
from postrl.trainers.pref_rationale import attach_rationales, rationale_pairs
from postrl.trainers.progress import progress_bar
from postrl.trainers.faults import RunGuard
from postrl.trainers.run_dir import start_run


class Parts:
    """What a step needs: the policy, its data and reference caches, the loss and its needs."""

    def __init__(self, cfg: PrefConfig, device, tokenizer, model):
        self.cfg, self.device, self.tokenizer, self.model = cfg, device, tokenizer, model
        entry = PREFERENCE_LOSSES.get(cfg.loss.name)
        self.loss_fn = functools.partial(entry.fn, **cfg.loss.kwargs)
        self.token_level, self.use_kl = "token_logps" in entry.needs, "kto_kl" in entry.needs
        self.use_rationales = "rationales" in entry.needs
        self.online: OnlineKL | None = None  # needs "online_kl": set by `train` before the checkpoint loads
        self.step = 0
        self.logprob_fn = logprob_fn(cfg.train)
        self.pad = tokenizer.pad_token_id
        self.bf16 = use_bf16(cfg.train, device)
        self.examples: dict[str, list] = {}
        self.ref: dict[str, dict] | None = None
        self.greedy_rows: list = []
        self.greedy_ids: list[list[int]] = []

    def logps(self, examples, pairs=None) -> pb.SeqLogps:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return pb.seq_logps(self.model, pairs or pb.response_pairs(examples), self.logprob_fn, self.pad,
                                self.device)


def load_data(p: Parts) -> dict[str, Any]:
    """Rows -> encoded train/eval examples in the loss's format; returns data facts for the summary."""
    cfg, tok = p.cfg, p.tokenizer
    rows = load_preference_rows(cfg.data, cfg.data.split)
    held_out = load_preference_rows(cfg.data, cfg.data.eval_split)[:cfg.eval.limit]
    select = {}
    if cfg.data.select is not None:  # MPO: train on the easy (or hard) pairs only
        rows, select = select_pairs(rows, cfg.data, cfg.run_dir, f"data.source={cfg.data.source}")
    rows, note = fit_rows(rows, cfg.loss.name, cfg.loss.kwargs, f"data.source={cfg.data.source}")
    margin = cfg.data.columns.margin if "margins" in PREFERENCE_LOSSES.get(cfg.loss.name).needs else None
    p.examples["train"], dropped = encode_examples(tok, rows, cfg.data, cfg.train.max_length, cfg.data.source,
                                                   margin)
    if p.use_rationales:
        p.examples["train"], more = attach_rationales(tok, rows, p.examples["train"], cfg.data, cfg.train.max_length,
                                                      f"data.source={cfg.data.source}")
        dropped += more
    p.examples["eval"] = []
    if held_out:
        eval_rows = fit_rows(held_out, cfg.loss.name, cfg.loss.kwargs, "the held-out data")[0]
        p.examples["eval"] = encode_examples(tok, eval_rows, cfg.data, cfg.train.max_length, "the held-out data",
                                             margin)[0]
        if p.use_rationales:
            p.examples["eval"] = attach_rationales(tok, eval_rows, p.examples["eval"], cfg.data, cfg.train.max_length,
                                                   "the held-out data")[0]
    if p.use_kl and p.examples["train"][0].kind == "unpaired":
        for exs in p.examples.values():
            if exs:
                add_kl_pairs(exs)
    has_answer = bool(held_out) and all(r.columns.get("answer") is not None for r in held_out)
    if cfg.eval.greedy == "always" and not has_answer:
        raise ValueError("eval.greedy: always needs held-out rows with an `answer` column (and data.eval_split "
                         "or data.eval_source); set eval.greedy: auto or never")
    if cfg.eval.greedy != "never" and has_answer:
        p.greedy_ids, kept = encode_prompts(tok, held_out, cfg.data)
        by_index = {r.index: r for r in held_out}
        p.greedy_rows = [by_index[i] for i in kept]
    return {"train_examples": len(p.examples["train"]), "eval_examples": len(p.examples["eval"]),
            "dropped_long": dropped, "data_note": note, **select}


def reference_cache(p: Parts, console=None) -> dict[str, dict]:
    """Reference log-probs of every example, from the run's cache file or one pass of the reference."""
    cfg = p.cfg
    identity = cfg.model.model_dump(mode="json", exclude={"device", "gradient_checkpointing", "attn_implementation"})
    key = pb.fingerprint(identity, p.examples, p.token_level)
    cached = pb.load_cache(cfg.run_dir, key)
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    # the reference model lives only in this function (training reads the cache), unless the
    # online samples keep one loaded anyway
    ref = p.online.ref if p.online is not None else load_reference(cfg.model, p.model, p.tokenizer, p.device)
    model = ref if ref is not None else p.model
    out = {}
    with reference_context(p.model, ref), torch.autocast(p.device.type, dtype=torch.bfloat16, enabled=p.bf16):
        for split, exs in p.examples.items():
            out[split] = pb.compute_reference(model, exs, p.logprob_fn, p.pad, p.device,
                                              chunk=cfg.train.micro_batch_size, token_level=p.token_level)
    pb.save_cache(cfg.run_dir, key, out)
    if console is not None:
        n = sum(len(e) for e in p.examples.values())
        console.print(f"reference log-probs of {n} examples in {time.perf_counter() - t0:.1f} s "
                      f"(cached in {cfg.run_dir / pb.CACHE_FILE})")
    return out


def kl_point(p: Parts, exs, idx, split: str):
    """The KTO reference point's inputs for `exs`: policy (no gradient) and cached reference log-probs."""
    with torch.no_grad():
        pol = p.logps(exs, pb.kl_pairs(exs)).sums.float()
    return pol, (p.ref[split]["kl"][idx].to(pol.device) if p.ref is not None else None)


def online_batch(p: Parts, exs, seed: int):
    """(pairs of prompt and a response sampled from the current policy, their reference log-probs)
    for `exs`, or None when the loss needs no online samples. Sampled for the whole batch at once,
    before any micro-batch updates anything."""
    if p.online is None:
        return None
    mb = p.cfg.train.micro_batch_size
    pairs = [(ex.prompt_ids, y) for ex, y in zip(exs, p.online.sample(exs, seed))]
    return pairs, torch.cat([p.online.reference_logps(p, pairs[i:i + mb]) for i in range(0, len(pairs), mb)])


def extra_logps(p: Parts, part, online, lo: int):
    """For micro-batch `part` (rows lo.. of the batch): the online pair's (policy, reference) log-probs
    ("online_kl", policy with gradient) and log pi(r | x, y_w, y_l) of the rationales ("rationales")."""
    kl = None
    if online is not None:
        pairs, ref = online
        pol = p.logps(part, pairs[lo:lo + len(part)]).sums
        kl = (pol, ref[lo:lo + len(part)].to(pol.device))
    rationale = p.logps(part, rationale_pairs(part)).sums if p.use_rationales else None
    return kl, rationale


def train_step(p: Parts, idx: list[int]) -> dict[str, torch.Tensor]:
    exs, B, mb = [p.examples["train"][i] for i in idx], len(idx), p.cfg.train.micro_batch_size
    ref = p.ref["train"] if p.ref is not None else None
    online = online_batch(p, exs, step_seed(p.cfg.seed, p.step))
    point = None
    if p.use_kl and exs[0].kl_response is not None:
        # the whole batch's estimate, given to every micro-batch (as row means, so any mean over a
        # micro-batch equals the batch's): accumulation then equals one big batch
        parts = [kl_point(p, exs[i:i + mb], idx[i:i + mb], "train") for i in range(0, B, mb)]
        point = tuple(None if parts[0][k] is None else torch.cat([x[k] for x in parts]).mean() for k in (0, 1))
    totals: dict[str, torch.Tensor] = {}
    for i in range(0, B, mb):
        part, part_idx = exs[i:i + mb], idx[i:i + mb]
        out = p.logps(part)
        kl = tuple(None if x is None else x.expand(len(part)) for x in point) if point is not None else None
        online_kl, rationale = extra_logps(p, part, online, i)
        inp = pb.build_inputs(part, out, ref, part_idx, p.token_level, online_kl or kl, rationale)
        res = p.loss_fn(inp)
        loss = res.loss.float().sum() / B
        loss.backward()
        stats = {"loss": res.loss.detach().float().mean(),
                 **{k: v.detach().float().mean() for k, v in res.metrics.items()},
                 **{k: v.float().mean() for k, v in pb.pair_stats(inp).items()}}
        for k, v in stats.items():  # each a mean over the micro-batch: weight by its share
            totals[k] = totals.get(k, 0.0) + v.cpu() * (len(part) / B)
    return totals


@torch.no_grad()
def evaluate_pairs(p: Parts) -> dict[str, float]:
    """Held-out loss and pair statistics (`pref_batch.pair_stats`), means over the eval examples."""
    exs, mb = p.examples["eval"], p.cfg.train.micro_batch_size
    ref = p.ref["eval"] if p.ref is not None else None
    online = online_batch(p, exs, step_seed(p.cfg.seed + 1, p.step))
    sums: dict[str, float] = {}
    for i in range(0, len(exs), mb):
        part, idx = exs[i:i + mb], list(range(i, min(i + mb, len(exs))))
        kl = kl_point(p, part, idx, "eval") if p.use_kl and part[0].kl_response is not None else None
        online_kl, rationale = extra_logps(p, part, online, i)
        inp = pb.build_inputs(part, p.logps(part), ref, idx, p.token_level, online_kl or kl, rationale)
        stats = {"loss": p.loss_fn(inp).loss.float(), **pb.pair_stats(inp)}
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + float(v.float().sum())
    return {f"eval/{k}": v / len(exs) for k, v in sums.items()}


def run_eval(p: Parts, step: int) -> dict[str, float]:
    from postrl.rewards import RewardSet
    from postrl.rollout.engines import build_engine
    from postrl.trainers.evaluate import evaluate

    p.step = step  # seeds the held-out online samples
    out: dict[str, float] = evaluate_pairs(p) if p.examples["eval"] else {}
    if p.greedy_rows:
        engine = build_engine(RolloutSection(), p.model, p.tokenizer)
        rewards = RewardSet([RewardSpec(name=p.cfg.eval.reward)])
        greedy = evaluate(engine, p.tokenizer, p.greedy_rows, p.greedy_ids, rewards,
                          max_new_tokens=p.cfg.eval.max_new_tokens, seed=p.cfg.seed)
        out.update({f"eval/{k}": v for k, v in greedy.items()})
    if out:
        with open(p.cfg.run_dir / "eval.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **out}) + "\n")
    return out


def train(cfg: PrefConfig, *, resume: bool = False, console=None) -> dict[str, Any]:
    t_start = time.perf_counter()
    ckpt = start_run(cfg, resume)
    device = resolve_device(cfg.model.device)
    tokenizer = load_tokenizer(cfg.model)
    p = Parts(cfg, device, tokenizer, load_model(cfg.model, tokenizer, device))
    for m in p.model.modules():  # as TRL's disable_dropout: log-probs of policy and reference must agree
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    facts = load_data(p)
    if facts["data_note"] and console is not None:
        console.print(facts["data_note"])
    needs = PREFERENCE_LOSSES.get(cfg.loss.name).needs
    if "online_kl" in needs:  # keeps a reference model loaded; built before the checkpoint: it is the start
        p.online = OnlineKL(p)
    if "reference" in needs:
        p.ref = reference_cache(p, console)  # before the checkpoint is loaded: the reference is the start
    n_train = len(p.examples["train"])
    steps = cfg.train.steps or math.ceil(cfg.train.epochs * n_train / cfg.train.batch_size)
    optimizer = build_optimizer(p.model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, steps)
    sampler = SAMPLERS["uniform"](n_train, cfg.seed)
    state: dict[str, Any] = {"step": 0, "pref_seconds": 0.0, "eval_before": None}
    if ckpt is not None:
        state.update(load_checkpoint(ckpt, model=p.model, optimizer=optimizer, scheduler=scheduler))
        sampler.load_state_dict(state["sampler"])
    start = int(state["step"])
    guard = RunGuard(cfg.run_dir, max_nonfinite_steps=cfg.train.max_nonfinite_steps, console=console)
    guard.load_state_dict(state)  # SIGINT/SIGTERM and non-finite streaks: trainers/faults.py
    logger = MetricsLogger(cfg.run_dir, resume_step=start if resume else None, console=console,
                           console_every=cfg.logging.console_every, tensorboard=cfg.logging.tensorboard,
                           wandb_project=cfg.logging.wandb_project, config=cfg.model_dump(mode="json"))
    if start == 0 and cfg.eval.before:
        state["eval_before"] = run_eval(p, 0)
        if state["eval_before"]:
            logger.log(0, state["eval_before"])
    p.model.train()
    metrics: dict[str, float] = {}
    with guard, progress_bar(console, cfg.logging.progress, "pref", steps, start) as advance:
        for step in range(start, steps):
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            p.step = step  # seeds this step's online samples
            metrics = {k: float(v) for k, v in train_step(p, sampler.next(cfg.train.batch_size)).items()}
            norm = torch.nn.utils.clip_grad_norm_(p.model.parameters(), cfg.train.max_grad_norm or float("inf"))
            if torch.isfinite(norm):
                optimizer.step()
                scheduler.step()
            state["pref_seconds"] += time.perf_counter() - t0
            done = step + 1
            metrics.update({"grad_norm": float(norm), "lr": scheduler.get_last_lr()[0],
                            "time/step": time.perf_counter() - t0})
            metrics.update(guard.after_step(done, metrics))
            if cfg.eval.every and done % cfg.eval.every == 0 and done != steps:
                metrics.update(run_eval(p, done))
            logger.log(done, metrics)
            advance(loss=metrics["loss"], pair_acc=metrics.get("pref/accuracy", float("nan")))
            stopping = guard.stopping()
            if stopping or done % cfg.checkpoint.every == 0 or done == steps:
                state.update(step=done, sampler=sampler.state_dict(), **guard.state_dict())
                path = save_checkpoint(cfg.run_dir, done, model=p.model, tokenizer=tokenizer, optimizer=optimizer,
                                       scheduler=scheduler, state=state, keep_last=cfg.checkpoint.keep_last)
            if stopping:
                logger.close()
                guard.stop(done, path)
    after = run_eval(p, steps)
    if after:
        logger.log(steps, after)
    logger.close()
    final_dir = cfg.run_dir / "final"
    p.model.save_pretrained(final_dir, safe_serialization=True)
    tokenizer.save_pretrained(final_dir)
    summary = _summary(cfg, state, after, metrics, steps, facts, time.perf_counter() - t_start)
    summary["model_dir"] = str(final_dir)
    (cfg.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _summary(cfg, state, after, metrics, steps, facts, seconds) -> dict[str, Any]:
    before = state.get("eval_before") or {}
    out: dict[str, Any] = {"name": cfg.name, "loss": cfg.loss.name, "pref_steps": steps}
    for key in ("eval/pref/accuracy", "eval/pref/margin", "eval/accuracy"):
        if key in after:
            short = key.removeprefix("eval/").replace("/", "_")
            out[f"{short}_before"] = before.get(key)
            out[f"{short}_after"] = after[key]
    out.update({"final_loss": metrics.get("loss"), **{k: v for k, v in facts.items() if k != "data_note"},
                "pref_seconds": round(state["pref_seconds"], 3), "total_seconds": round(seconds, 3)})
    return out
