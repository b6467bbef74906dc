"""Log-ratio process rewards: an outcome-trained model against its reference, on the policy's tokens.

A DPO-style model phi defines a token-level reward through its log-ratio to the reference it was
trained from (Rafailov et al.'s "Your language model is secretly a Q-function", arXiv 2404.12358):

    r_t = beta * log( pi_phi(y_t | x, y_<t) / pi_ref(y_t | x, y_<t) )

`implicit_prm` sums it over each step (Free Process Rewards without Process Labels, 2412.01981;
PRIME 2502.01456); `rto` uses it as a dense per-token reward for PPO (DPO Meets PPO, 2404.18922).
Both score the policy's own sampled token ids (prompt ids + completion ids, no re-tokenising), so
phi and the reference must map token ids as the policy's tokenizer does: checked against it.

`path` is a `postrl pref` run's `final` directory (or any causal LM directory); `ref_path`
defaults to that run's starting model, read from the run's `config.yaml` (its `model` section:
`ref_model`, `reference_soup`, or `name_or_path`, the `tiny` spec included). Both models are
loaded once per process.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import torch
import yaml

from postrl.rewards.process import (PROCESS_REWARDS, ProcessContext, ProcessRewards, completion_token_lists,
                                    scatter_step_rewards, token_steps)


def _run_config(path: Path) -> dict | None:
    """The `config.yaml` of the run that wrote `path` (its `final` or `checkpoints/step_*`)."""
    for d in (path.parent, path.parent.parent):
        f = d / "config.yaml"
        if f.is_file():
            return yaml.safe_load(f.read_text(encoding="utf-8")) or {}
    return None


@functools.lru_cache(maxsize=4)
def load_pair(path: str, ref_path: str | None, device: str = "auto"):
    """(phi, reference, phi's tokenizer): frozen causal LMs on `device`, loaded once per process."""
    from postrl.config import ModelSection
    from postrl.learner.models import load_model, load_reference, load_tokenizer, resolve_device

    where = Path(path)
    if not where.is_dir():
        raise FileNotFoundError(f"log-ratio reward: path {path!r} is not a directory; give the `final` directory of "
                                "a `postrl pref` run (the outcome-trained model)")
    dev = resolve_device(device)
    tok = load_tokenizer(ModelSection(name_or_path=path))
    phi = load_model(ModelSection(name_or_path=path), tok, dev)
    if ref_path:
        ref_cfg = ModelSection(name_or_path=ref_path)
        ref = load_model(ref_cfg, load_tokenizer(ref_cfg), dev)
    else:
        saved = _run_config(where)
        if saved is None or not isinstance(saved.get("model"), dict):
            raise ValueError(f"log-ratio reward: {path!r} has no run config.yaml beside it to find its reference "
                             "model; give kwargs.ref_path (the model the outcome-trained model started from)")
        cfg = ModelSection.model_validate({**saved["model"], "lora": {"enabled": False}})
        if cfg.ref_model or cfg.reference_soup:
            ref = load_reference(cfg, phi, tok, dev)
        else:
            ref = load_model(cfg, load_tokenizer(cfg), dev)
    for m in (phi, ref):
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    if phi.get_input_embeddings().weight.shape[0] != ref.get_input_embeddings().weight.shape[0]:
        raise ValueError(f"log-ratio reward: {path!r} and its reference have different vocabulary sizes; the "
                         "reference must be the model it was trained from (kwargs.ref_path)")
    return phi, ref, tok


def check_same_ids(tok, policy_tokenizer, what: str) -> None:
    """Raise unless `tok` maps every token to the same id as the policy's tokenizer: the log-ratio
    is read on the policy's sampled ids, which must mean the same tokens to both models."""
    if tok.get_vocab() != policy_tokenizer.get_vocab():
        raise ValueError(f"{what}: the model's tokenizer and the policy's have different vocabularies, so the "
                         "policy's completion_ids mean other tokens to it; use a model trained from the policy's "
                         "tokenizer (e.g. a `postrl pref` run on the same base model)")


@torch.no_grad()
def token_log_ratios(ctx: ProcessContext, *, path: str, ref_path: str | None = None, device: str = "auto",
                     batch_size: int = 16, what: str = "log-ratio reward") -> torch.Tensor:
    """log pi_phi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t) for every completion token of the
    batch: [B, T] float32 on CPU, 0 on padding. One forward of each model per `batch_size` rows."""
    from postrl.learner.logprobs import completion_logprobs

    if not path:
        raise ValueError(f"{what}: kwargs.path is required: the outcome-trained model (the `final` directory of a "
                         f"`postrl pref` run), e.g. {{name: {what}, kwargs: {{path: runs/dpo/final}}}}")
    if batch_size < 1:
        raise ValueError(f"{what}: batch_size must be >= 1, got {batch_size}")
    phi, ref, tok = load_pair(str(path), str(ref_path) if ref_path else None, device)
    check_same_ids(tok, ctx.tokenizer, what)
    batch, dev = ctx.batch, phi.device
    out = torch.zeros(batch.completion_ids.shape, dtype=torch.float32)
    for i in range(0, batch.size, batch_size):
        part = batch.select(list(range(i, min(i + batch_size, batch.size)))).to(dev)
        diff = completion_logprobs(phi, part)[0] - completion_logprobs(ref, part)[0]
        out[i:i + part.size] = (diff * part.completion_mask).float().cpu()
    return out


@PROCESS_REWARDS.register("implicit_prm", paper="Free Process Rewards without Process Labels", arxiv="2412.01981",
                          summary="step reward = beta * sum over the step of log pi_phi/pi_ref of an outcome-trained "
                          "(DPO) model")
def implicit_prm(ctx: ProcessContext, *, path: str | None = None, ref_path: str | None = None, beta: float = 0.05,
                 separator: str = "\n", granularity: Literal["step", "token"] = "step", device: str = "auto",
                 batch_size: int = 16) -> ProcessRewards:
    """Implicit PRM: the process rewards of a model trained only on outcomes.

        r_t   = beta * log( pi_phi(y_t | x, y_<t) / pi_ref(y_t | x, y_<t) )       (2412.01981)
        r^k   = sum_{t in step k} r_t          (q_t = sum_{i<=t} r_i is the learned Q; a step's reward
                                                is q at its end minus q at the previous step's end)
        step: token_rewards = r^k at the end token of step k;  token: token_rewards = r_t (PRIME's
              dense form, 2502.01456);  step_rewards = [r^1 .. r^K] in both

    `path`: the outcome-trained model (e.g. `postrl pref` with the DPO loss on outcome pairs);
    `ref_path`: its reference (default: read from its run's config.yaml). `beta` must be the beta
    phi was trained with; 0.05 is PRIME's (not confirmed as the implicit-PRM paper's only setting).
    Steps are the policy's tokens cut at `separator` (rewards.process.token_steps).
    """
    if granularity not in ("step", "token"):
        raise ValueError(f"implicit_prm: granularity must be 'step' or 'token', got {granularity!r}")
    r = beta * token_log_ratios(ctx, path=path, ref_path=ref_path, device=device, batch_size=batch_size,
                                what="implicit_prm")
    ends = [[e for e, _ in token_steps(ids, ctx.tokenizer, separator)] for ids in completion_token_lists(ctx.batch)]
    steps = []
    for i, e in enumerate(ends):
        starts = [0] + [k + 1 for k in e[:-1]]
        steps.append([float(r[i, a:b + 1].sum()) for a, b in zip(starts, e)])
    dense = r if granularity == "token" else scatter_step_rewards(steps, ends, tuple(r.shape))
    return ProcessRewards(token_rewards=dense, step_rewards=steps, step_ends=ends)


@PROCESS_REWARDS.register("rto", paper="DPO Meets PPO: Reinforced Token Optimization for RLHF", arxiv="2404.18922",
                          summary="dense token reward beta * log pi_dpo/pi_ref of a DPO model, for PPO")
def rto(ctx: ProcessContext, *, path: str | None = None, ref_path: str | None = None, beta: float = 0.1,
        device: str = "auto", batch_size: int = 16) -> ProcessRewards:
    """Reinforced Token Optimization: a DPO model's log-ratio as a dense token reward.

        r_t = beta * log( pi_dpo(y_t | x, y_<t) / pi_ref(y_t | x, y_<t) )     on every completion token

    RTO's full reward adds the outcome (sentence-level) reward on the last token and the KL
    penalty to the current policy's reference; in `postrl train` those are the configured
    `rewards` and `algorithm.kl_in_reward`, added to the same token rewards. Use it with a
    token-level estimator (gae, the `ppo` preset; reinforce_pp) or any outcome estimator, which
    sums it. No step rewards. `beta`: the DPO model's beta (0.1, DPO's usual value; the
    paper's setting could not be confirmed).
    """
    r = beta * token_log_ratios(ctx, path=path, ref_path=ref_path, device=device, batch_size=batch_size, what="rto")
    return ProcessRewards(token_rewards=r, step_rewards=[[] for _ in range(r.shape[0])],
                          step_ends=[[] for _ in range(r.shape[0])])
