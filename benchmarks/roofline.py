"""Roofline: this machine's matmul peak, and how close the learner and the rollout come to it.

    python -m benchmarks.roofline [--quick] [--sizes small,10m] [--steps N]

Peak: the best of several timed n x n @ n x n matmuls (2 n^3 FLOPs each), fp32 and bf16.

Model FLOPs (`model_flops`), for a decoder with L layers, hidden h, query width q = heads x head_dim:

    N        = matmul parameters: per layer the q/k/v/o projections and the 3 MLP matrices, plus
               the LM head (V x h, counted even when tied to the embedding: it is a real matmul;
               the embedding lookup, norms and biases are not counted)
    forward  = 2 N + 4 L q c  FLOPs per token, c = keys the token attends to (QK^T and AV)
    training = 3 x forward (backward costs twice the forward) = 6 N + 12 L q c per token

For a causal sequence of S tokens the mean context is c = (S + 1) / 2.

Columns of the table (one row per framework and size; median step after a warm-up step):

    learner MFU   training FLOPs of the step's real tokens (rows x (prompt + completion)) /
                  learner seconds / fp32 peak
    rollout tok/s completion tokens / rollout seconds
    bound tok/s   fp32 peak / (2 N): every sampled token needs at least the weight matmuls of one
                  forward; `of bound` is the fraction reached

Run alone, it measures postrl in this process (`trainers.rl.build` + `rl_step`, random-init
models of the `vs_trl` sizes, 1 warm-up step); `benchmarks.vs_trl` calls the same functions on
its own runs of both frameworks.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from benchmarks.common import SIZES, Size, markdown_table, median_after_warmup, rl_config


# ------------------------------------------------------------------------------- model FLOPs
def _get(config, key: str, default=None):
    return config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)


def matmul_params(config) -> int:
    """N: parameters that take part in a matmul per token (see the module docstring).

    `config` is an HF config (or a dict) with hidden_size, num_hidden_layers, num_attention_heads,
    num_key_value_heads, intermediate_size, vocab_size and optionally head_dim.
    """
    h, L, V = _get(config, "hidden_size"), _get(config, "num_hidden_layers"), _get(config, "vocab_size")
    heads = _get(config, "num_attention_heads")
    kv_heads = _get(config, "num_key_value_heads") or heads
    head_dim = _get(config, "head_dim") or h // heads
    q, kv, inter = heads * head_dim, kv_heads * head_dim, _get(config, "intermediate_size")
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * inter  # q, k, v, o; gate, up, down
    return L * per_layer + V * h


def model_flops(config, tokens: float, *, context: float = 0.0, training: bool = True) -> float:
    """FLOPs to run `tokens` tokens that each attend to `context` keys on average.

        inference: tokens x (2 N + 4 L q context)
        training:  tokens x (6 N + 12 L q context)      (forward + backward = 3 forwards)
    """
    L = _get(config, "num_hidden_layers")
    heads = _get(config, "num_attention_heads")
    q = heads * (_get(config, "head_dim") or _get(config, "hidden_size") // heads)
    forward = 2 * matmul_params(config) + 4 * L * q * context
    return tokens * forward * (3 if training else 1)


# ------------------------------------------------------------------------------------- peak
def matmul_peak(dtype: str = "float32", *, n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of the fastest of `reps` n x n matmuls (after one untimed warm-up)."""
    import torch

    dt = getattr(torch, dtype)
    a, b = torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def peaks(quick: bool = False) -> dict[str, float]:
    """fp32 and bf16 matmul peaks in FLOP/s. The best of several reps, because this VM stalls."""
    reps = 4 if quick else 10
    return {"float32": matmul_peak("float32", reps=reps), "bfloat16": matmul_peak("bfloat16", reps=reps)}


# --------------------------------------------------------------------------------- utilisation
def roofline_row(config, peak: float, *, rows: int, prompt_tokens: float, completion_tokens: float,
                 learner_s: float, rollout_s: float) -> dict[str, float]:
    """Learner MFU and rollout throughput of one step against the fp32 roofline.

    `rows` sequences per step with `prompt_tokens` and `completion_tokens` real tokens on average;
    `learner_s` / `rollout_s` the step's learner and rollout seconds.
    """
    seq = prompt_tokens + completion_tokens
    train = model_flops(config, rows * seq, context=(seq + 1) / 2, training=True)
    rollout_tok_s = rows * completion_tokens / rollout_s
    bound = peak / (2 * matmul_params(config))
    return {"learner_gflops": train / learner_s / 1e9, "learner_mfu": train / learner_s / peak,
            "rollout_tok_s": rollout_tok_s, "bound_tok_s": bound, "of_bound": rollout_tok_s / bound}


ROOFLINE_HEADERS = ["size", "framework", "N matmul (M)", "learner s", "learner GFLOP/s", "learner MFU",
                    "rollout s", "rollout tok/s", "bound tok/s", "of bound"]


def roofline_cells(size: str, framework: str, config, r: dict, learner_s: float, rollout_s: float) -> list:
    return [size, framework, matmul_params(config) / 1e6, learner_s, r["learner_gflops"], r["learner_mfu"],
            rollout_s, r["rollout_tok_s"], r["bound_tok_s"], r["of_bound"]]


def peak_line(p: dict[str, float]) -> str:
    return (f"matmul peak (2048^3, best of reps): fp32 {p['float32'] / 1e9:.1f} GFLOP/s, "
            f"bf16 {p['bfloat16'] / 1e9:.1f} GFLOP/s")


# ------------------------------------------------------------------------------- standalone
def measure_postrl(size: Size, steps: int) -> tuple[object, list[dict], float]:
    """Run `steps` RL steps of `size` (random init) in this process: (model config, per-step
    metrics, mean prompt tokens)."""
    from postrl.config import RLConfig, resolve
    from postrl.trainers import rl
    from postrl.trainers.run_dir import seed_everything

    with tempfile.TemporaryDirectory() as tmp:
        raw = rl_config(size, "tiny", steps, reward="benchmarks.common:digit_fraction")
        cfg = resolve(RLConfig, raw, {"model.tiny": size.arch, "output_dir": tmp}, source="roofline")
        seed_everything(cfg.seed)
        p = rl.build(cfg)
        try:
            metrics = [rl.rl_step(p, step) for step in range(steps)]
        finally:
            p.rollouts.close()
        prompt_tokens = statistics.fmean(len(ids) for ids in p.train_ids)
        return p.learner.model.config, metrics, prompt_tokens


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.roofline", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer matmul reps and RL steps")
    parser.add_argument("--sizes", default="small,10m", help=f"comma-separated, from {', '.join(SIZES)}")
    parser.add_argument("--steps", type=int, help="RL steps per size (the first is a warm-up)")
    args = parser.parse_args()
    sizes = [SIZES[s] for s in args.sizes.split(",")]

    p = peaks(args.quick)
    print(peak_line(p), flush=True)
    rows = []
    for size in sizes:
        steps = args.steps or (2 if args.quick else 4)
        config, metrics, prompt_tokens = measure_postrl(size, steps)
        learner_s = median_after_warmup([m["time/learner"] for m in metrics])
        rollout_s = median_after_warmup([m["time/rollout"] for m in metrics])
        completion = median_after_warmup([m["completion_len/mean"] for m in metrics])
        r = roofline_row(config, p["float32"], rows=size.rows, prompt_tokens=prompt_tokens,
                         completion_tokens=completion, learner_s=learner_s, rollout_s=rollout_s)
        rows.append(roofline_cells(size.name, "postrl", config, r, learner_s, rollout_s))
        print(f"{size.name}: {steps} steps, {size.rows} rows of {prompt_tokens:.1f} prompt + "
              f"{completion:.1f} completion tokens", flush=True)
    print()
    print(markdown_table(ROOFLINE_HEADERS, rows))


if __name__ == "__main__":
    main()
