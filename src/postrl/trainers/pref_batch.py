"""Log-probs of preference examples, the reference cache, and the loss inputs built from them.

Every response of a micro-batch's examples goes through one forward as a row of a `RolloutBatch`
(prompt left-padded, response right-padded), with the learner's log-prob function (plain,
shared-prefix or packed, `train.prefix_sharing` / `train.packing`): chosen and rejected share
their prompt, which prefix sharing encodes once. Sequence log-probs are sums over response tokens.

Reference log-probs are computed once, before training, for every training and held-out example
(and the KTO mismatched pairs), kept in memory and saved as `RUN_DIR/reference_logps.pt` with a
fingerprint of the reference model and the token ids; a resumed run with the same fingerprint
loads them instead of running the reference model again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from postrl.algorithms.preference import PrefInputs
from postrl.rollout.batch import RolloutBatch
from postrl.trainers.pref_data import PrefExample

CACHE_FILE = "reference_logps.pt"


@dataclass
class SeqLogps:
    """Per-response log-probs of N flattened responses."""

    sums: torch.Tensor  # [N] log pi(y | x), summed over response tokens
    lengths: torch.Tensor  # [N] response tokens (float)
    tokens: torch.Tensor  # [N, T] per-token log-probs (0 on padding)
    mask: torch.Tensor  # [N, T] 1 on response tokens


def to_batch(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> RolloutBatch:
    """(prompt ids, response ids) rows -> a RolloutBatch (prompts left-, responses right-padded)."""
    return RolloutBatch.from_token_lists([p for p, _ in pairs], [r for _, r in pairs], pad_id)


def seq_logps(model, pairs, logprob_fn, pad_id: int, device) -> SeqLogps:
    batch = to_batch(pairs, pad_id).to(device)
    logp, _ = logprob_fn(model, batch)[:2]
    mask = batch.completion_mask.to(logp.dtype)
    logp = logp * mask
    return SeqLogps(logp.sum(-1), mask.sum(-1), logp, mask)


def response_pairs(examples: list[PrefExample]) -> list[tuple[list[int], list[int]]]:
    return [(ex.prompt_ids, r) for ex in examples for r in ex.responses]


def kl_pairs(examples: list[PrefExample]) -> list[tuple[list[int], list[int]]]:
    return [(ex.prompt_ids, ex.kl_response) for ex in examples]


# ------------------------------------------------------------------------------ reference cache
def compute_reference(model, examples: list[PrefExample], logprob_fn, pad_id: int, device, *, chunk: int,
                      token_level: bool) -> dict:
    """Reference log-probs of every response (and KL pair) of `examples`, `chunk` examples per forward."""
    sums, tokens, kl = [], [], []
    with torch.no_grad():
        for i in range(0, len(examples), chunk):
            part = examples[i:i + chunk]
            out = seq_logps(model, response_pairs(part), logprob_fn, pad_id, device)
            k = 0
            for ex in part:
                n = len(ex.responses)
                sums.append(out.sums[k:k + n].float().cpu())
                if token_level:
                    tokens.append([out.tokens[k + j, :len(r)].float().cpu() for j, r in enumerate(ex.responses)])
                k += n
            if part[0].kl_response is not None:
                kl.append(seq_logps(model, kl_pairs(part), logprob_fn, pad_id, device).sums.float().cpu())
    return {"sums": sums, "tokens": tokens if token_level else None, "kl": torch.cat(kl) if kl else None}


def fingerprint(identity: dict, splits: dict[str, list[PrefExample]], token_level: bool) -> str:
    """A hash of what the reference log-probs depend on: the reference model and every token id."""
    h = hashlib.sha1(json.dumps({**identity, "token_level": token_level}, sort_keys=True, default=str).encode())
    for name, exs in sorted(splits.items()):
        h.update(name.encode())
        for ex in exs:
            h.update(json.dumps([ex.prompt_ids, ex.responses, ex.kl_response]).encode())
    return h.hexdigest()


def load_cache(run_dir: Path, key: str) -> dict | None:
    path = Path(run_dir) / CACHE_FILE
    if not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=False)
    return saved["splits"] if saved.get("fingerprint") == key else None


def save_cache(run_dir: Path, key: str, splits: dict) -> None:
    path = Path(run_dir) / CACHE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"fingerprint": key, "splits": splits}, tmp)
    tmp.replace(path)


# ----------------------------------------------------------------------------------- loss inputs
def build_inputs(examples: list[PrefExample], out: SeqLogps, ref: dict | None, idx: list[int],
                 token_level: bool, kl: tuple[torch.Tensor, torch.Tensor] | None = None,
                 rationale: torch.Tensor | None = None) -> PrefInputs:
    """PrefInputs for `examples` (rows `idx` of the split whose reference cache is `ref`).

    `out` holds the policy's log-probs of the examples' responses in order. Ranked examples fill
    `list_*` [B, K] (-inf where an example has fewer than K responses) and `chosen_*` with their
    best-scored response. `kl`: (policy, reference) log-probs, one per example, of the KTO pairs
    ("kto_kl") or of responses sampled online ("online_kl"). `rationale`: log pi(r | x, y_w, y_l) [B].
    """
    kind, dev = examples[0].kind, out.sums.device
    starts = torch.tensor([0] + [len(e.responses) for e in examples[:-1]]).cumsum(0).to(dev)
    ref_sums = [ref["sums"][i].to(dev) for i in idx] if ref is not None else None
    f: dict = {}
    if kind == "ranked":
        K = max(len(e.responses) for e in examples)
        best = torch.tensor([max(range(len(e.scores)), key=e.scores.__getitem__) for e in examples], device=dev)
        f["list_logps"] = torch.full((len(examples), K), float("-inf"), device=dev)
        f["list_lengths"] = torch.zeros(len(examples), K, device=dev)
        f["scores"] = torch.full((len(examples), K), float("-inf"), device=dev)
        if ref is not None:
            f["list_ref_logps"] = torch.full((len(examples), K), float("-inf"), device=dev)
        for b, e in enumerate(examples):
            n, s = len(e.responses), int(starts[b])
            f["list_logps"][b, :n] = out.sums[s:s + n]
            f["list_lengths"][b, :n] = out.lengths[s:s + n]
            f["scores"][b, :n] = torch.tensor(e.scores, device=dev)
            if ref is not None:
                f["list_ref_logps"][b, :n] = ref_sums[b]
        chosen = starts + best
    else:
        best, chosen = torch.zeros(len(examples), dtype=torch.long, device=dev), starts
    f.update(chosen_logps=out.sums[chosen], chosen_lengths=out.lengths[chosen])
    if ref is not None:
        f["chosen_ref_logps"] = torch.stack([r[int(k)] for r, k in zip(ref_sums, best)])
    if token_level:
        f.update(chosen_token_logps=out.tokens[chosen], chosen_token_mask=out.mask[chosen])
        if ref is not None:
            f["chosen_token_ref_logps"] = _pad_tokens([ref["tokens"][i][int(k)] for i, k in zip(idx, best)],
                                                      out.tokens.shape[1], dev)
    if kind == "paired":
        rej = starts + 1
        f.update(rejected_logps=out.sums[rej], rejected_lengths=out.lengths[rej])
        if examples[0].margin is not None:
            f["margins"] = torch.tensor([e.margin for e in examples], device=dev)
        if ref is not None:
            f["rejected_ref_logps"] = torch.stack([r[1] for r in ref_sums])
        if token_level:
            f.update(rejected_token_logps=out.tokens[rej], rejected_token_mask=out.mask[rej])
            if ref is not None:
                f["rejected_token_ref_logps"] = _pad_tokens([ref["tokens"][i][1] for i in idx],
                                                            out.tokens.shape[1], dev)
    if kind == "unpaired":
        f["labels"] = torch.tensor([float(e.label) for e in examples], device=dev)
    if kl is not None:
        f["kl_logps"], f["kl_ref_logps"] = kl
    if rationale is not None:
        f["rationale_logps"] = rationale
    return PrefInputs(**f)


def _pad_tokens(rows: list[torch.Tensor], T: int, device) -> torch.Tensor:
    out = torch.zeros(len(rows), T, device=device)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r.to(device)
    return out


# --------------------------------------------------------------------------------------- metrics
def pair_stats(inp: PrefInputs) -> dict[str, torch.Tensor]:
    """Algorithm-blind diagnostics [B]: implicit reward log pi/pi_ref (log pi when reference-free)
    of chosen and rejected, their margin and whether it is positive.

    paired: chosen vs rejected. ranked: averaged over every pair of responses whose scores differ
    (better minus worse). unpaired: the reward of the completion, and whether its sign matches
    the label (reference-based losses only; a log-prob alone has no sign)."""
    has_ref = inp.chosen_ref_logps is not None
    with torch.no_grad():
        chosen = inp.chosen_logps - (inp.chosen_ref_logps if has_ref else 0)
        out = {"logps/chosen": inp.chosen_logps.detach(), "pref/reward_chosen": chosen.detach()}
        if inp.rejected_logps is not None:
            rejected = inp.rejected_logps - (inp.rejected_ref_logps if has_ref else 0)
            margin = chosen - rejected
            out.update({"logps/rejected": inp.rejected_logps.detach(), "pref/reward_rejected": rejected,
                        "pref/margin": margin, "pref/accuracy": (margin > 0).float()})
        elif inp.list_logps is not None:
            r = inp.list_logps - (inp.list_ref_logps if has_ref else 0)
            better = (inp.scores[:, :, None] > inp.scores[:, None, :]) & torch.isfinite(r)[:, :, None] \
                & torch.isfinite(r)[:, None, :]
            diff = torch.nan_to_num(r[:, :, None] - r[:, None, :], nan=0.0, posinf=0.0, neginf=0.0)
            n = better.sum((1, 2)).clamp(min=1)
            out.update({"pref/margin": (diff * better).sum((1, 2)) / n,
                        "pref/accuracy": ((diff > 0) & better).sum((1, 2)) / n})
        elif inp.labels is not None and has_ref:
            out["pref/accuracy"] = ((chosen > 0).float() == inp.labels).float()
        return out
