"""`postrl online`: online and iterative preference training.

Per step (online.iterations x online.steps_per_iteration of them):

1. at an iteration start (after the first): APO momentum, then refresh the previous iterate
   and, with `online.reference: previous_iterate`, the reference (`online_iterates.Snapshots`);
2. draw `online.prompts_per_step` prompts (`uniform` sampler, checkpointed);
3. sample `rollout.n` responses per prompt from each source the pair rule needs (the current
   policy; a stronger and a weaker model; the reference; an opponent), add the gold response;
4. score them with `rewards`, judge what the rule and the loss compare, and let the pair rule
   (`online_pairs.PAIR_RULES`) choose (chosen, rejected) pairs (`online_candidates`);
5. one update of any pairwise preference loss: policy log-probs with gradient, reference /
   snapshot log-probs without, micro-batches accumulating gradients normalised by the step's
   number of pairs (`pref_batch.seq_logps`, `build_inputs`, `pair_stats`);
6. log pair statistics (pairs per step, fraction of prompts without a pair, chosen/rejected
   reward and margin) and the loss's metrics; checkpoint.

No method name appears here: what to sample and compute comes from the pair rule's and the
loss's `needs`. Greedy accuracy on held-out prompts is measured before and after (and every
`eval.every` steps). One optimizer and learning-rate schedule run over all iterations (the
papers restart fine-tuning each iteration); this keeps `--resume` exact, and the tests check it.
A step whose prompts give no pair makes no update (optimizer and schedule do not advance).
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import torch

from postrl.algorithms import PREFERENCE_LOSSES
from postrl.learner.checkpoint import load_checkpoint, save_checkpoint
from postrl.learner.learner import build_optimizer, build_scheduler, logprob_fn, use_bf16
from postrl.learner.models import load_model, load_reference, load_tokenizer, reference_context, resolve_device
from postrl.rewards import RewardSet
from postrl.rollout.engines import SamplingParams, build_engine
from postrl.samplers import SAMPLERS
from postrl.tracking import MetricsLogger, truncate_jsonl
from postrl.trainers import pref_batch as pb
from postrl.trainers.evaluate import evaluate
from postrl.trainers.online_candidates import Pair, gold_ids, load_judge, make_pairs, pair_metrics, sample
from postrl.trainers.online_config import OnlineConfig
from postrl.trainers.online_iterates import Snapshots
from postrl.trainers.pref_data import PrefExample
from postrl.trainers.faults import RunGuard
from postrl.trainers.progress import progress_bar
from postrl.trainers.rl import encode_train_and_eval
from postrl.trainers.run_dir import start_run


class Parts:
    """What a step needs: policy, reference and snapshots, engines, data, rewards, judge, loss."""

    def __init__(self, cfg: OnlineConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.model.device)
        self.tokenizer = tok = load_tokenizer(cfg.model)
        self.model = load_model(cfg.model, tok, self.device)
        for m in self.model.modules():  # as TRL: sampled and scored log-probs must agree with the reference's
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        rule, loss = cfg.rule_needs, cfg.loss_needs
        entry = PREFERENCE_LOSSES.get(cfg.loss.name)
        self.loss_fn = functools.partial(entry.fn, **cfg.loss.kwargs)
        self.token_level = "token_logps" in loss
        self.logprob_fn = logprob_fn(cfg.train)
        self.bf16 = use_bf16(cfg.train, self.device)
        self.rewards = RewardSet(cfg.rewards)
        self.judge = load_judge(cfg.online.judge) if cfg.online.judge is not None else None
        self.train_rows, self.train_ids, self.eval_rows, self.eval_ids = encode_train_and_eval(cfg, tok)
        needs_ref = "reference" in loss or "reference_sample" in rule or "mixture_opponent" in rule
        self.ref = load_reference(cfg.model, self.model, tok, self.device) if needs_ref else None
        kw = cfg.loss_kwargs
        self.snap = Snapshots(self.model, self.ref, refresh_reference=cfg.online.reference == "previous_iterate",
                              iterate="previous_iterate" in loss, momentum=cfg.online.momentum,
                              prox_steps=int(kw["prox_steps"]) if "prox_opponent" in rule else None)
        self.engines = {"policy": build_engine(cfg.rollout, self.model, tok)}
        self.sources = ["policy"] if "policy_samples" in rule or "online_kl" in loss else []
        if "pair_models" in rule:
            for src, section in (("strong", cfg.online.strong_model), ("weak", cfg.online.weak_model)):
                self.engines[src] = build_engine(cfg.rollout, _pair_model(section, self.model, tok, self.device), tok)
                self.sources.append(src)
        if "reference_sample" in rule:
            self.engines["reference"] = build_engine(cfg.rollout, self.ref, tok)
            self.sources.append("reference")
        if "mixture_opponent" in rule:
            from postrl.rollout.mixture import MixtureEngine

            self.engines["opponent"] = MixtureEngine(self.model, self.ref, tok, mixture_coef=kw["mixture_coef"])
            self.sources.append("opponent")
        if "prox_opponent" in rule:
            self.prox_engines = {"half": build_engine(cfg.rollout, self.snap.anchor, tok),
                                 "full": build_engine(cfg.rollout, self.snap.half, tok)}
            self.sources.append("opponent")

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)


def _pair_model(section, policy, tokenizer, device):
    """A delta model (online.strong_model / weak_model): frozen, with the policy's vocabulary."""
    from postrl.learner.models import load_tokenizer as tok_of

    if tok_of(section).get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"online pair model {section.name_or_path!r} has another tokenizer than the policy; its "
                         "sampled token ids must mean the same tokens: use models that share the policy's tokenizer")
    model = load_model(section, tokenizer, device)
    if model.get_input_embeddings().weight.shape[0] != policy.get_input_embeddings().weight.shape[0]:
        raise ValueError(f"online pair model {section.name_or_path!r} has another vocabulary size than the policy")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------------- one step
def collect(p: Parts, step: int, idx: list[int]):
    """The step's pairs from prompts `idx` (sampling, gold responses, scoring, judging, the rule)."""
    cfg = p.cfg
    rows, prompt_ids = [p.train_rows[i] for i in idx], [p.train_ids[i] for i in idx]
    if "prox_opponent" in cfg.rule_needs:
        p.engines["opponent"] = p.prox_engines[p.snap.phase]
    seed = _step_seed(cfg.seed, step)
    drawn = sample(p.engines, p.sources, prompt_ids, SamplingParams.from_config(cfg.rollout), seed)
    responses = [[r for src in p.sources for r in drawn[src][g]] for g in range(len(idx))]
    sources = [[src for src in p.sources for _ in drawn[src][g]] for g in range(len(idx))]
    if "gold" in cfg.rule_needs:
        for g, row in enumerate(rows):
            responses[g].append(gold_ids(p.tokenizer, row, cfg.online.gold_column, len(prompt_ids[g]),
                                         cfg.train.max_length))
            sources[g].append("gold")
    rng = torch.Generator().manual_seed(seed)
    return make_pairs(cfg, p.tokenizer, rows, prompt_ids, responses, sources, p.rewards, p.judge, rng,
                      cfg.loss_needs), prompt_ids


def _logps(p: Parts, model, examples, pairs=None) -> pb.SeqLogps:
    with p.autocast():
        return pb.seq_logps(model, pairs or pb.response_pairs(examples), p.logprob_fn, p.tokenizer.pad_token_id,
                            p.device)


@torch.no_grad()
def _frozen(p: Parts, model, examples, token_level: bool) -> dict:
    """Log-probs of the examples' responses (and KL responses) under a frozen model (None: LoRA's base)."""
    with reference_context(p.model, model), p.autocast():
        return pb.compute_reference(model if model is not None else p.model, examples, p.logprob_fn,
                                    p.tokenizer.pad_token_id, p.device, chunk=len(examples), token_level=token_level)


def _inputs(p: Parts, pairs: list[Pair], examples: list[PrefExample]):
    """PrefInputs of one micro-batch, every field the loss needs filled."""
    needs, rule, dev = p.cfg.loss_needs, p.cfg.rule_needs, p.device
    ref = _frozen(p, p.ref, examples, p.token_level) if "reference" in needs else None
    out = _logps(p, p.model, examples)
    inp = pb.build_inputs(examples, out, ref, list(range(len(examples))), p.token_level)

    def column(values) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=dev)

    if "online_kl" in needs:
        inp.kl_logps = _logps(p, p.model, examples, pb.kl_pairs(examples)).sums
        inp.kl_ref_logps = (ref or _frozen(p, p.ref, examples, False))["kl"].to(dev)
    if "win_prob" in needs:
        inp.chosen_win_prob = column([x.win_prob for x in pairs])
    if "win_rates" in needs:
        inp.chosen_win_rate = column([x.chosen_win_rate for x in pairs])
        inp.rejected_win_rate = column([x.rejected_win_rate for x in pairs])
    if "reference_sample" in needs:  # the pi_ref sample is whichever side came from the reference
        from_ref = torch.tensor([x.chosen_source == "reference" for x in pairs], device=dev)
        inp.ref_sample_logps = torch.where(from_ref, inp.chosen_logps, inp.rejected_logps)
    snapshot = p.snap.anchor if "prox_opponent" in rule else p.snap.iterate
    if "previous_iterate" in needs or "prox_opponent" in needs:
        sums = _frozen(p, snapshot, examples, False)["sums"]
        inp.chosen_prev_logps = torch.stack([s[0] for s in sums]).to(dev)
        inp.rejected_prev_logps = torch.stack([s[1] for s in sums]).to(dev)
    return inp


def train_step(p: Parts, pairs: list[Pair], prompt_ids: list[list[int]]) -> dict[str, torch.Tensor]:
    """One accumulated backward over the step's pairs; means of the loss and its diagnostics."""
    B, mb = len(pairs), p.cfg.train.micro_batch_size
    totals: dict[str, torch.Tensor] = {}
    for i in range(0, B, mb):
        part = pairs[i:i + mb]
        examples = [PrefExample(prompt_ids[x.prompt], [x.chosen, x.rejected], "paired", kl_response=x.kl_response)
                    for x in part]
        inp = _inputs(p, part, examples)
        res = p.loss_fn(inp)
        (res.loss.float().sum() / B).backward()
        stats = {"loss": res.loss.detach().float().mean(),
                 **{k: v.detach().float().mean() for k, v in res.metrics.items()},
                 **{k: v.float().mean() for k, v in pb.pair_stats(inp).items()}}
        for k, v in stats.items():  # micro-batch means, weighted by their share of the step
            totals[k] = totals.get(k, 0.0) + v.cpu() * (len(part) / B)
    return totals


def run_eval(p: Parts, step: int) -> dict[str, float]:
    cfg = p.cfg
    out = evaluate(p.engines["policy"], p.tokenizer, p.eval_rows, p.eval_ids, p.rewards,
                   max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens, stop=cfg.rollout.stop,
                   success_threshold=cfg.eval.success_threshold, seed=cfg.seed + 1)
    with open(cfg.run_dir / "eval.jsonl", "a") as f:
        f.write(json.dumps({"step": step, **out}) + "\n")
    return {f"eval/{k}": v for k, v in out.items()}


# ------------------------------------------------------------------------------------ the loop
def train(cfg: OnlineConfig, *, resume: bool = False, console=None) -> dict[str, Any]:
    t_start = time.perf_counter()
    ckpt = start_run(cfg, resume)
    p = Parts(cfg)
    steps, spi = cfg.online.total_steps, cfg.online.steps_per_iteration
    optimizer = build_optimizer(p.model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, steps)
    sampler = SAMPLERS["uniform"](len(p.train_rows), cfg.seed)
    state: dict[str, Any] = {"step": 0, "seconds": 0.0, "eval_before": None, "updates": 0}
    if ckpt is not None:
        state.update(load_checkpoint(ckpt, model=p.model, optimizer=optimizer, scheduler=scheduler))
        sampler.load_state_dict(state["sampler"])
        p.snap.load(ckpt, state)
        truncate_jsonl(cfg.run_dir / "eval.jsonl", state["step"])
    start = int(state["step"])
    guard = RunGuard(cfg.run_dir, max_nonfinite_steps=cfg.train.max_nonfinite_steps, console=console)
    guard.load_state_dict(state)  # SIGINT/SIGTERM and non-finite streaks: trainers/faults.py
    logger = MetricsLogger(cfg.run_dir, resume_step=start if resume else None, console=console,
                           console_every=cfg.logging.console_every, tensorboard=cfg.logging.tensorboard,
                           wandb_project=cfg.logging.wandb_project, config=cfg.model_dump(mode="json"))
    if start == 0 and cfg.eval.before and p.eval_rows:
        state["eval_before"] = run_eval(p, 0)
        logger.log(0, state["eval_before"])
    metrics: dict[str, float] = {}
    with guard, progress_bar(console, cfg.logging.progress, "online", steps, start) as advance:
        for step in range(start, steps):
            t0 = time.perf_counter()
            if step and step % spi == 0:
                p.snap.start_iteration(p.model)
            idx = sampler.next(cfg.online.prompts_per_step)
            p.model.eval()
            step_pairs, prompt_ids = collect(p, step, idx)
            t_gen = time.perf_counter() - t0
            p.model.train()
            metrics = pair_metrics(step_pairs, len(idx))
            optimizer.zero_grad(set_to_none=True)
            if step_pairs.pairs:
                metrics.update({k: float(v) for k, v in train_step(p, step_pairs.pairs, prompt_ids).items()})
                norm = torch.nn.utils.clip_grad_norm_(p.model.parameters(), cfg.train.max_grad_norm or float("inf"))
                if torch.isfinite(norm):
                    optimizer.step()
                    scheduler.step()
                    state["updates"] += 1
                metrics["grad_norm"] = float(norm)
            p.snap.after_update(p.model)
            done = step + 1
            metrics.update({"iteration": step // spi, "lr": scheduler.get_last_lr()[0], "time/sample": t_gen,
                            "time/step": time.perf_counter() - t0})
            metrics.update(guard.after_step(done, metrics))
            if cfg.eval.every and done % cfg.eval.every == 0 and done != steps and p.eval_rows:
                metrics.update(run_eval(p, done))
            state["seconds"] += time.perf_counter() - t0
            logger.log(done, metrics)
            advance(pairs=metrics["pairs/count"], loss=metrics.get("loss", float("nan")))
            stopping = guard.stopping()
            if stopping or done % cfg.checkpoint.every == 0 or done == steps:
                state.update(step=done, sampler=sampler.state_dict(), **p.snap.state(), **guard.state_dict())
                path = save_checkpoint(cfg.run_dir, done, model=p.model, tokenizer=p.tokenizer, optimizer=optimizer,
                                       scheduler=scheduler, state=state, keep_last=cfg.checkpoint.keep_last,
                                       extra_dirs=p.snap.writers())
            if stopping:
                logger.close()
                guard.stop(done, path)
    after = run_eval(p, steps) if p.eval_rows else {}
    if after:
        logger.log(steps, after)
    logger.close()
    final_dir = cfg.run_dir / "final"
    p.model.save_pretrained(final_dir, safe_serialization=True)
    p.tokenizer.save_pretrained(final_dir)
    before = state.get("eval_before") or {}
    summary = {"name": cfg.name, "pair_rule": cfg.online.pair_rule, "loss": cfg.loss.name, "steps": steps,
               "updates": state["updates"], "accuracy_before": before.get("eval/accuracy"),
               "accuracy_after": after.get("eval/accuracy"), "online_seconds": round(state["seconds"], 3),
               "total_seconds": round(time.perf_counter() - t_start, 3), "model_dir": str(final_dir),
               **{f"last/{k}": v for k, v in metrics.items()}}
    (cfg.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _step_seed(seed: int, step: int) -> int:
    # a per-step seed makes each step's sampling independent of how the run was split by resumes
    return (seed * 1_000_003 + step * 7_919) % (2**62)
