"""`postrl prm`: a process reward model trained on step labels.

    rows (prompt, completions = steps, labels = one bool per step)
    -> prompt + step_1 + sep + step_2 + sep + ... (learner/process_model.encode_steps)
    -> the head's logit on each step's last separator token -> binary cross-entropy -> AdamW

The data format is TRL's stepwise supervision (PRMTrainer); `task:arithmetic_steps` builds it
offline. Every `eval.every` steps and at the end the held-out rows are scored: step accuracy
(score >= eval.threshold agrees with the label, over all held-out steps) and first-error
accuracy (per solution, the first step predicted wrong, or none, is the labelled first error, or
none). Checkpoints are HF-loadable (`AutoModelForTokenClassification.from_pretrained`) and carry
the separator and rendering; a resumed run continues with the same batches (the `uniform`
sampler's state) to the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from typing import Any

import torch

from postrl.data.loading import DataError, _check_prompt, hold_out, load_records
from postrl.learner.learner import use_bf16
from postrl.learner.models import load_tokenizer, resolve_device
from postrl.learner.process_model import (StepExample, encode_steps, first_error, step_logits, step_loss,
                                          store_prm_config)
from postrl.learner.reward_model import RenderSpec
from postrl.trainers.fit_loop import fit
from postrl.trainers.prm_config import PrmConfig
from postrl.trainers.run_dir import start_run


# ---------------------------------------------------------------------------------------- data
def parse_row(i: int, rec: dict, cfg: PrmConfig, where: str) -> tuple[Any, list[str], list[bool]]:
    """(prompt, steps, labels) of one stepwise-supervision row, or a DataError naming the row,
    the column and the fix."""
    col, sep = cfg.data.columns, cfg.data.separator
    at = f"row {i + 1} of {where}"
    for key in (col.prompt, col.completions, col.labels):
        if key not in rec:
            raise DataError(f"{at}: no column {key!r}; available columns: {', '.join(map(repr, rec)) or '(none)'}; "
                            "stepwise data needs prompt, completions (the steps) and labels (one bool per step): "
                            "set data.columns.* to the right names")
    prompt = _check_prompt(rec[col.prompt], col.prompt, at)
    steps, labels = rec[col.completions], rec[col.labels]
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise DataError(f"{at}: column {col.completions!r} must be a non-empty list of step strings, got "
                        f"{str(steps)[:60]!r}")
    if not isinstance(labels, list) or not all(isinstance(x, bool) for x in labels):
        raise DataError(f"{at}: column {col.labels!r} must be a list of booleans (true: the step is correct), got "
                        f"{str(labels)[:60]!r}")
    if len(labels) != len(steps):
        raise DataError(f"{at}: {len(steps)} steps in column {col.completions!r} but {len(labels)} labels in "
                        f"column {col.labels!r}; give one label per step")
    for k, s in enumerate(steps):
        if not s.strip():
            raise DataError(f"{at}: step {k + 1} of column {col.completions!r} is empty; remove it (and its label)")
        if sep in s:
            raise DataError(f"{at}: step {k + 1} of column {col.completions!r} contains the separator "
                            f"{sep!r}, so in use it would be cut into two steps; split the step or change "
                            "data.separator")
    return prompt, steps, labels


def load_rows(cfg: PrmConfig) -> tuple[list, list]:
    """(train rows, held-out rows) as (prompt, steps, labels) triples."""
    d = cfg.data
    recs, where = load_records(d.source, split=d.split, subset=d.subset, task_kwargs=d.task_kwargs)
    if d.limit is not None:
        recs = recs[:d.limit]
    train = [parse_row(i, r, cfg, where) for i, r in enumerate(recs)]
    held: list = []
    single_file = d.eval_source is None and not d.source.startswith("task:") and _is_file(d.source)
    if not single_file:
        try:
            erecs, ewhere = load_records(d.eval_source or d.source, split=d.eval_split, subset=d.subset,
                                         task_kwargs=d.task_kwargs)
        except DataError:
            if d.eval_source is not None:
                raise
            erecs, ewhere = [], ""  # no held-out split in this source: hold some rows out below
        held = [parse_row(i, r, cfg, ewhere) for i, r in enumerate(erecs)]
    if not held:
        train, held = hold_out(train, cfg.eval.holdout_fraction, cfg.seed, where)
    if cfg.eval.limit is not None:
        held = held[:cfg.eval.limit]
    return train, held


def _is_file(source: str) -> bool:
    from postrl.data.loading import is_single_file

    return is_single_file(source)


def encode_rows(tokenizer, rows, cfg: PrmConfig, spec: RenderSpec, where: str) -> list[StepExample]:
    out, dropped = [], 0
    for k, (prompt, steps, labels) in enumerate(rows):
        ex = encode_steps(tokenizer, prompt, steps, cfg.data.separator, spec, labels)
        if len(ex.ids) > cfg.train.max_length:
            if cfg.data.long_rows == "error":
                raise DataError(f"{where}: row {k + 1} has {len(ex.ids)} tokens (prompt + steps + separators), more "
                                f"than train.max_length={cfg.train.max_length}; raise train.max_length or set "
                                "data.long_rows: skip")
            dropped += 1
            continue
        out.append(ex)
    if dropped:
        warnings.warn(f"{where}: dropped {dropped} of {len(rows)} rows longer than train.max_length="
                      f"{cfg.train.max_length} (data.long_rows: skip)", stacklevel=2)
    return out


# ---------------------------------------------------------------------------------------- eval
@torch.no_grad()
def evaluate_steps(model, examples: list[StepExample], pad_id: int, device, *, micro_batch_size: int, bf16: bool,
                   threshold: float = 0.5) -> dict[str, float]:
    """Held-out step accuracy, first-error accuracy and loss (mean per step)."""
    if not examples:
        return {}
    was_training = model.training
    model.eval()
    loss, steps, right_steps, right_first = 0.0, 0, 0, 0
    try:
        for i in range(0, len(examples), micro_batch_size):
            mb = examples[i:i + micro_batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = step_logits(model, mb, pad_id, device)
            loss += float(step_loss(logits, mb)[0])
            for z, e in zip(logits, mb):
                predicted = (torch.sigmoid(z) >= threshold).tolist()
                steps += len(e.labels)
                right_steps += sum(p == l for p, l in zip(predicted, e.labels))
                right_first += first_error(predicted) == first_error(e.labels)
    finally:
        model.train(was_training)
    return {"step_accuracy": right_steps / steps, "first_error_accuracy": right_first / len(examples),
            "loss": loss / steps, "rows": float(len(examples)), "steps": float(steps)}


# ---------------------------------------------------------------------------------------- loop
def train(cfg: PrmConfig, *, resume: bool = False, console=None) -> dict[str, Any]:
    from transformers import AutoModelForTokenClassification

    from postrl.learner.critic import load_scalar_model

    t_start = time.perf_counter()
    ckpt = start_run(cfg, resume)
    device = resolve_device(cfg.model.device)
    tokenizer = load_tokenizer(cfg.model)
    d = cfg.data
    spec = RenderSpec(d.chat_template, d.system_prompt, cfg.train.max_length)
    train_rows, held_rows = load_rows(cfg)
    examples = encode_rows(tokenizer, train_rows, cfg, spec, d.source)
    held = encode_rows(tokenizer, held_rows, cfg, spec, f"{d.eval_source or d.source} (held out)")
    if not examples:
        raise DataError(f"{d.source}: no training rows left; check data.source, data.limit and train.max_length")
    model = load_scalar_model(AutoModelForTokenClassification, cfg.model.name_or_path, cfg.model, tokenizer, device,
                              key="model.name_or_path", kind="token-classification (step head)",
                              user="process reward model")
    store_prm_config(model, d.separator, spec)  # every checkpoint then scores as this run trains
    t = cfg.train
    bf16, pad_id = use_bf16(t, device), tokenizer.pad_token_id

    def step(batch: list[StepExample]) -> dict[str, float]:
        n_steps = sum(len(e.labels) for e in batch)
        loss_sum, right = torch.zeros(()), torch.zeros(())
        for i in range(0, len(batch), t.micro_batch_size):
            mb = batch[i:i + t.micro_batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = step_logits(model, mb, pad_id, device)
            loss, correct = step_loss(logits, mb)
            (loss / n_steps).backward()  # the mean over the batch's steps, whatever the micro-batching
            loss_sum += loss.detach().cpu()
            right += correct.cpu()
        return {"loss": float(loss_sum) / n_steps, "step_accuracy": float(right) / n_steps}

    def evaluate() -> dict[str, float]:
        return evaluate_steps(model, held, pad_id, device, micro_batch_size=t.micro_batch_size, bf16=bf16,
                              threshold=cfg.eval.threshold)

    steps = t.steps or t.epochs * math.ceil(len(examples) / t.batch_size)
    r = fit(model, tokenizer, examples, cfg, name="prm", steps=steps, step_fn=step, ckpt=ckpt, resume=resume,
            console=console, evaluate=evaluate, progress={"loss": "loss", "acc": "step_accuracy"})
    summary = {"name": cfg.name, "prm_steps": r.steps, "final_loss": r.metrics.get("loss", float("nan")),
               "train_step_accuracy": r.metrics.get("step_accuracy", float("nan")),
               "eval_step_accuracy": r.final_eval.get("step_accuracy", float("nan")),
               "eval_first_error_accuracy": r.final_eval.get("first_error_accuracy", float("nan")),
               "eval_loss": r.final_eval.get("loss", float("nan")), "eval_rows": len(held), "rows": len(examples),
               "prm_seconds": round(r.seconds, 3),
               "total_seconds": round(time.perf_counter() - t_start, 3), "model_dir": str(r.final_dir)}
    (cfg.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
