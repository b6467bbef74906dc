"""Rollout throughput of the `hf` engine against the previous dynamic-cache loop.

    python -m benchmarks.generation [--reps N] [--threads N] [--models tiny,10m] [--no-compile]

Workload: 128 prompts of 8-24 random tokens, one completion each, up to 64 new tokens at
temperature 1. The random models' logits are nearly flat, so an EOS logit bias of 2.1 (added by a
hook on `lm_head`) gives each step a ~3% chance to end the row: lengths vary from a few tokens to
the full 64 (about a third of the rows reach it), which is what makes dropping finished rows
matter. Models (float32, CPU): `tiny` (hidden 96, 3 layers, 4 heads, 2 kv heads, 0.44M params,
the demo's) and `10m` (hidden 256, 8 layers, 8 heads, 4 kv heads, intermediate 1024).

Rows:
    dynamic loop     the previous engine's approach: DynamicCache (a torch.cat per layer per
                     token), a growing attention mask, no row dropping, torch.multinomial
    hf, no drop      HFEngine with the static cache, finished rows kept (compact_fraction > 1)
    hf               HFEngine as shipped (static cache, rows dropped at 25% finished)
    hf + compile     the same with `compile=True` (the first call, which compiles, is reported
                     separately as `first call`)

`time` is the median wall time of --reps calls after one warm-up call, `tokens` the completion
tokens generated (they differ between rows only through the random streams), `tok/s` their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from transformers import DynamicCache

from postrl.learner.tiny import build_model, build_tokenizer
from postrl.rollout.engines import SamplingParams
from postrl.rollout.hf_engine import HFEngine

MODELS = {
    "tiny": dict(hidden_size=96, num_layers=3, num_heads=4, num_kv_heads=2, intermediate_size=384),
    "10m": dict(hidden_size=256, num_layers=8, num_heads=8, num_kv_heads=4, intermediate_size=1024),
}
EOS_BIAS = 2.1


@torch.no_grad()
def dynamic_loop(model, prompts, params: SamplingParams, pad_id: int, eos_id: int, seed: int) -> int:
    """The pre-static-cache engine, reduced to its cost: returns the number of tokens generated."""
    gen = torch.Generator().manual_seed(seed)
    B, P = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, P), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p)
        attn[i, P - len(p):] = 1
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=DynamicCache(config=model.config),
                use_cache=True, logits_to_keep=1)
    cache, logits, next_pos = out.past_key_values, out.logits[:, -1], pos[:, -1:] + 1
    done = torch.zeros(B, dtype=torch.bool)
    generated = 0
    for _ in range(params.max_new_tokens):
        logprobs = torch.log_softmax(logits.float() / params.temperature, dim=-1)
        token = torch.multinomial(logprobs.exp(), 1, generator=gen).squeeze(-1)
        token = torch.where(done, pad_id, token)
        generated += int((~done).sum())
        done |= token == eos_id
        if bool(done.all()):
            break
        attn = torch.cat([attn, torch.ones((B, 1), dtype=attn.dtype)], dim=1)
        out = model(input_ids=token[:, None], attention_mask=attn, position_ids=next_pos, past_key_values=cache,
                    use_cache=True)
        cache, logits, next_pos = out.past_key_values, out.logits[:, -1], next_pos + 1
    return generated


def timed(call, reps: int) -> tuple[float, float, int]:
    """(first call seconds, median seconds over `reps` further calls, tokens of the last call)."""
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    times, tokens = [], 0
    for _ in range(reps):
        t0 = time.perf_counter()
        tokens = call()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), tokens


def bench_model(name: str, reps: int, compile: bool) -> list[tuple]:
    tok = build_tokenizer()
    model = build_model(tok, init_seed=0, **MODELS[name]).eval()
    bias = torch.zeros(len(tok))
    bias[tok.eos_token_id] = EOS_BIAS
    model.lm_head.register_forward_hook(lambda module, args, out: out + bias)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(6, len(tok), (int(n),), generator=g).tolist()
               for n in torch.randint(8, 25, (128,), generator=g)]
    params = SamplingParams(n=1, temperature=1.0, max_new_tokens=64)

    def engine_call(engine):
        return lambda: int(engine.generate(prompts, params, seed=0).completion_mask.sum())

    cases = [("dynamic loop", lambda: dynamic_loop(model, prompts, params, tok.pad_token_id, tok.eos_token_id, 0)),
             ("hf, no drop", engine_call(HFEngine(model, tok, compact_fraction=2.0))),
             ("hf", engine_call(HFEngine(model, tok)))]
    if compile:
        cases.append(("hf + compile", engine_call(HFEngine(model, tok, compile=True))))
    rows = []
    for label, call in cases:
        first, median, tokens = timed(call, reps)
        rows.append((name, label, first, median, tokens))
        print(f"  {name:5s} {label:14s} first call {first:7.2f}s  median {median:6.2f}s  {tokens:5d} tokens",
              flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--models", default="tiny,10m")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled engine (compiling takes minutes)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # inductor's CPU warnings would bury the table
    rows = []
    for name in args.models.split(","):
        rows += bench_model(name, args.reps, not args.no_compile)
    print(f"\n{'model':6s} {'engine':14s} {'first call':>10s} {'time':>8s} {'tokens':>7s} {'tok/s':>8s} {'speedup':>8s}")
    base = {}
    for name, label, first, median, tokens in rows:
        rate = tokens / median
        base.setdefault(name, rate)
        print(f"{name:6s} {label:14s} {first:9.2f}s {median:7.2f}s {tokens:7d} {rate:8.0f} {rate / base[name]:7.2f}x")


if __name__ == "__main__":
    main()
