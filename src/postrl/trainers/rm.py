"""`postrl rm`: Bradley–Terry reward-model training on paired preferences.

    pairs (prompt, chosen, rejected) -> token ids (learner/reward_model.encode_responses)
    -> r_w, r_l in one forward -> -log sigmoid(r_w - r_l - m) [+ c (r_w + r_l)^2] -> AdamW

Ranked rows become every (better, worse) pair of a row (InstructGPT, arXiv 2203.02155, sec. 3.5);
unpaired rows are an error. The held-out pair accuracy (r_w > r_l) is measured every
`eval.every` steps and at the end; the final evaluation also stores the held-out reward mean and
std in the saved config (what `normalize` of the `reward_model` reward uses). Checkpoints are
HF-loadable (`AutoModelForSequenceClassification.from_pretrained`), and a resumed run continues
with the same batches (the `uniform` sampler's state) to the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from postrl.config import RMConfig
from postrl.data.loading import DataError, hold_out
from postrl.learner.learner import use_bf16
from postrl.learner.models import load_tokenizer, resolve_device
from postrl.learner.reward_model import (RenderSpec, bradley_terry_loss, encode_responses, forward_rewards,
                                         load_reward_model, reward_stats, store_rm_config)
from postrl.trainers.fit_loop import fit
from postrl.trainers.run_dir import start_run


@dataclass
class Pair:
    """One comparison: token ids of the preferred and the dispreferred response, and its margin."""

    chosen: list[int]
    rejected: list[int]
    margin: float


# ---------------------------------------------------------------------------------------- data
def comparisons(rows, where: str) -> list[tuple[Any, Any, Any, float | None]]:
    """(prompt, chosen, rejected, margin column or None) of every comparison in `rows`."""
    from postrl.data.preference import data_kind

    if not rows:
        return []
    kind = data_kind(rows)
    if kind == "unpaired":
        raise DataError(f"{where}: postrl rm trains a Bradley–Terry model on pairs, but this data is unpaired "
                        "(completion + label); give paired rows (prompt, chosen, rejected) or ranked rows "
                        "(responses + scores), or train on labelled completions with `postrl pref` and "
                        "loss.name: kto")
    out = []
    for r in rows:
        margin = r.columns.get("margin")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
            raise DataError(f"row {r.index + 1} of {where}: column 'margin' = {margin!r} is not a number; it is "
                            "the pair's Bradley–Terry margin (drop or rename the column)")
        if kind == "paired":
            out.append((r.prompt, r.chosen, r.rejected, margin))
        else:  # ranked: every pair of responses with different scores, better first
            for i, (a, sa) in enumerate(zip(r.responses, r.scores)):
                out += [(r.prompt, a, b, margin) for j, (b, sb) in enumerate(zip(r.responses, r.scores)) if sa > sb]
    return out


def encode_pairs(tokenizer, items, spec: RenderSpec, cfg: RMConfig, where: str) -> list[Pair]:
    """Token ids of every comparison; pairs longer than train.max_length follow data.long_rows."""
    if not items:
        return []
    prompts = [p for p, _, _, _ in items]
    chosen = encode_responses(tokenizer, prompts, [c for _, c, _, _ in items], spec)
    rejected = encode_responses(tokenizer, prompts, [r for _, _, r, _ in items], spec)
    pairs, dropped = [], 0
    for k, (w, l, (_, _, _, m)) in enumerate(zip(chosen, rejected, items)):
        if max(len(w), len(l)) > cfg.train.max_length:
            if cfg.data.long_rows == "error":
                raise DataError(f"{where}: comparison {k + 1} has {max(len(w), len(l))} tokens (prompt + response "
                                f"+ EOS), more than train.max_length={cfg.train.max_length}; raise "
                                "train.max_length or set data.long_rows: skip to drop such pairs")
            dropped += 1
            continue
        pairs.append(Pair(w, l, cfg.train.margin if m is None else float(m)))
    if dropped:
        warnings.warn(f"{where}: dropped {dropped} of {len(items)} pairs longer than train.max_length="
                      f"{cfg.train.max_length} (data.long_rows: skip)", stacklevel=2)
    return pairs


def load_pairs(cfg: RMConfig, tokenizer, spec: RenderSpec) -> tuple[list[Pair], list[Pair]]:
    """(train pairs, held-out pairs), both checked and tokenised."""
    from postrl.data.preference import load_preference_rows

    d = cfg.data
    train_rows = load_preference_rows(d, d.split)
    eval_rows = load_preference_rows(d, d.eval_split)
    where = d.source
    train = comparisons(train_rows, where)
    held = comparisons(eval_rows, d.eval_source or d.source)
    if not held:  # no held-out split: hold out a seeded fraction of the training comparisons
        train, held = hold_out(train, cfg.eval.holdout_fraction, cfg.seed, where, "pair(s)")
    if cfg.eval.limit is not None:
        held = held[:cfg.eval.limit]
    train_pairs = encode_pairs(tokenizer, train, spec, cfg, where)
    held_pairs = encode_pairs(tokenizer, held, spec, cfg, f"{d.eval_source or d.source} (held out)")
    if not train_pairs:
        raise DataError(f"{where}: no training pairs left; check data.source, data.limit and train.max_length")
    return train_pairs, held_pairs


# ---------------------------------------------------------------------------------------- loop
def pair_rewards(model, pairs: list[Pair], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_w, r_l) [b] each, from one forward over the 2b sequences."""
    r = forward_rewards(model, [p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id, device)
    return r[:len(pairs)], r[len(pairs):]


@torch.no_grad()
def evaluate_pairs(model, pairs: list[Pair], pad_id: int, device, *, micro_batch_size: int, bf16: bool,
                   center_coef: float = 0.0) -> dict[str, float]:
    """Held-out pair accuracy (r_w > r_l; ties count as wrong), loss, mean gap and reward statistics."""
    if not pairs:
        return {}
    was_training = model.training
    model.eval()
    w, l, m = [], [], []
    try:
        for i in range(0, len(pairs), micro_batch_size):
            mb = pairs[i:i + micro_batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                rw, rl = pair_rewards(model, mb, pad_id, device)
            w.append(rw.cpu()), l.append(rl.cpu())
            m.append(torch.tensor([p.margin for p in mb]))
    finally:
        model.train(was_training)
    rw, rl = torch.cat(w), torch.cat(l)
    out = bradley_terry_loss(rw, rl, margin=torch.cat(m), center_coef=center_coef)
    stats = reward_stats(torch.cat([rw, rl]))
    return {"accuracy": float(out.correct.mean()), "loss": float(out.loss.mean()), "margin": float(out.margin.mean()),
            "pairs": float(len(pairs)), **stats}


def train(cfg: RMConfig, *, resume: bool = False, console=None) -> dict[str, Any]:
    t_start = time.perf_counter()
    ckpt = start_run(cfg, resume)
    device = resolve_device(cfg.model.device)
    tokenizer = load_tokenizer(cfg.model)
    spec = RenderSpec(cfg.data.chat_template, cfg.data.system_prompt, cfg.train.max_length)
    pairs, held = load_pairs(cfg, tokenizer, spec)
    model = load_reward_model(cfg.model.name_or_path, cfg.model, tokenizer, device)
    store_rm_config(model, spec)  # every checkpoint then scores as this run trains
    t = cfg.train
    bf16, pad_id = use_bf16(t, device), tokenizer.pad_token_id

    def step(batch: list[Pair]) -> dict[str, float]:
        sums = {k: torch.zeros(()) for k in ("loss", "bt_loss", "center_loss", "accuracy", "margin",
                                               "rewards/chosen", "rewards/rejected")}
        for i in range(0, len(batch), t.micro_batch_size):
            mb = batch[i:i + t.micro_batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                rw, rl = pair_rewards(model, mb, pad_id, device)
            out = bradley_terry_loss(rw, rl, margin=torch.tensor([p.margin for p in mb], device=rw.device),
                                     center_coef=t.center_rewards_coef)
            (out.loss.sum() / len(batch)).backward()  # the batch mean, whatever the micro-batching
            for key, v in (("loss", out.loss), ("bt_loss", out.bt), ("center_loss", out.center),
                           ("accuracy", out.correct), ("margin", out.margin), ("rewards/chosen", rw),
                           ("rewards/rejected", rl)):
                sums[key] += v.detach().float().sum().cpu()
        return {k: float(v) / len(batch) for k, v in sums.items()}

    def evaluate() -> dict[str, float]:
        return evaluate_pairs(model, held, pad_id, device, micro_batch_size=t.micro_batch_size, bf16=bf16,
                              center_coef=t.center_rewards_coef)

    steps = t.steps or t.epochs * math.ceil(len(pairs) / t.batch_size)
    # the final evaluation's reward statistics go into the last checkpoint and `final`
    r = fit(model, tokenizer, pairs, cfg, name="rm", steps=steps, step_fn=step, ckpt=ckpt, resume=resume,
            console=console, evaluate=evaluate, on_final_eval=lambda final: store_rm_config(model, spec, _stats(final)),
            progress={"loss": "loss", "acc": "accuracy"})
    summary = {"name": cfg.name, "rm_steps": r.steps, "final_loss": r.metrics.get("loss", float("nan")),
               "train_accuracy": r.metrics.get("accuracy", float("nan")),
               "eval_accuracy": r.final_eval.get("accuracy", float("nan")),
               "eval_loss": r.final_eval.get("loss", float("nan")), "eval_pairs": len(held), "pairs": len(pairs),
               "reward_mean": r.final_eval.get("reward_mean"), "reward_std": r.final_eval.get("reward_std"),
               "rm_seconds": round(r.seconds, 3), "total_seconds": round(time.perf_counter() - t_start, 3),
               "model_dir": str(r.final_dir)}
    (cfg.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _stats(evaluation: dict[str, float]) -> dict[str, float]:
    return {k: evaluation[k] for k in ("reward_mean", "reward_std") if k in evaluation}
