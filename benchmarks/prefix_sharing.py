"""Shared-prefix and packed forwards against the plain padded forward: time and memory.

    python -m benchmarks.prefix_sharing [--quick] [--reps N] [--threads N]

Part 1: one GRPO group (8 completions of 32 tokens) behind prompts of 64, 512 and 2048 tokens,
`shared_prefix_logprobs` vs `completion_logprobs`. Part 2: a batch of singleton rows with varied
prompt and completion lengths, `packed_logprobs` vs `completion_logprobs`. Each cell is one
forward + backward of `(logp * weights * mask).sum()` on a ~8M-parameter Qwen2 in float32 on
CPU. Columns:

    time     median wall time over --reps runs (after one warm-up call per method)
    cpu      median process CPU time (all threads) of the same runs: steadier than wall time
             on a shared machine, since waiting for a core is not counted
    saved    bytes autograd keeps for backward (saved-tensor hooks, counted once per storage,
             parameters excluded): the activation memory, deterministic
    rss      peak resident set size above the pre-call level, sampled every ~1 ms by a thread
             (includes temporaries and the allocator's behaviour; noisy, a lower bound)
    tokens   positions the model runs over (rows x columns, summed over forwards)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import threading
import time

import torch

from postrl.learner.logprobs import completion_logprobs
from postrl.learner.packing import packed_logprobs
from postrl.learner.prefix_sharing import shared_prefix_logprobs
from postrl.learner.tiny import build_model, build_tokenizer
from postrl.rollout.batch import RolloutBatch


def make_batch(prompt_lens: list[int], completion_lens: list[int], vocab: int, seed: int) -> RolloutBatch:
    """Rows with the given prompt and completion lengths; equal-length prompts are one shared prompt."""
    g = torch.Generator().manual_seed(seed)
    prompts = {n: torch.randint(6, vocab, (n,), generator=g) for n in set(prompt_lens)}
    B, P, T = len(prompt_lens), max(prompt_lens), max(completion_lens)
    prompt_ids = torch.zeros(B, P, dtype=torch.long)
    prompt_mask = torch.zeros(B, P, dtype=torch.long)
    for i, n in enumerate(prompt_lens):
        prompt_ids[i, P - n:] = prompts[n]
        prompt_mask[i, P - n:] = 1
    completion_mask = (torch.arange(T)[None, :] < torch.tensor(completion_lens)[:, None]).long()
    completion_ids = torch.randint(6, vocab, (B, T), generator=g) * completion_mask
    return RolloutBatch(prompt_ids, prompt_mask, completion_ids, completion_mask, completion_mask.float(),
                        torch.zeros(B, T), torch.zeros(B, dtype=torch.long))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_memory() -> None:
    gc.collect()
    try:  # hand freed heap pages back to the OS so the next RSS baseline is honest (glibc only)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def fwd_bwd(fn, model, batch, weights) -> int:
    """One forward + backward; returns the bytes saved for backward (one count per storage)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logp, _ = fn(model, batch)
    (logp * weights * batch.completion_mask).sum().backward()
    return sum(saved.values())


def measure(fn, model, batch, reps: int) -> dict[str, float]:
    weights = torch.randn(batch.completion_ids.shape, generator=torch.Generator().manual_seed(0))
    release_memory()
    base, peak, stop = rss_bytes(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    saved = fwd_bwd(fn, model, batch, weights)
    stop.set()
    sampler.join()
    times, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        fwd_bwd(fn, model, batch, weights)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"time": statistics.median(times), "cpu": statistics.median(cpu), "saved": saved,
            "rss": max(peak[0] - base, 0)}


def count_tokens(model, fn, batch) -> int:
    seen = []
    handle = model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"].numel()), with_kwargs=True)
    with torch.no_grad():
        fn(model, batch)
    handle.remove()
    return sum(seen)


def row(label: str, method: str, m: dict[str, float], tokens: int, base: dict[str, float] | None) -> str:
    mb = 2 ** 20
    speedup = f"{base['time'] / m['time']:5.2f}x" if base else "    -"
    cpu_speedup = f"{base['cpu'] / m['cpu']:5.2f}x" if base else "    -"
    saving = f"{m['saved'] / base['saved']:5.2f}" if base else "    -"
    return (f"{label:<22} {method:<14} {m['time']:8.2f} {speedup:>8} {m['cpu']:8.2f} {cpu_speedup:>8} "
            f"{m['saved'] / mb:9.0f} {saving:>7} "
            f"{m['rss'] / mb:8.0f} {tokens:8d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="prompts of 64 and 512 only, one timed run")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per cell (median reported)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's); 1 is steadier on a busy machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = 1 if args.quick else args.reps
    prompt_lengths = [64, 512] if args.quick else [64, 512, 2048]

    tok = build_tokenizer()
    model = build_model(tok, hidden_size=256, num_layers=8, num_heads=8, num_kv_heads=4, intermediate_size=1024,
                        max_position_embeddings=2304).train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen2 {n_params / 1e6:.1f}M parameters, float32, {torch.get_num_threads()} threads, "
          f"attention {model.config._attn_implementation}; time = median of {reps} fwd+bwd (s)")
    print(f"{'batch':<22} {'method':<14} {'time s':>8} {'speedup':>8} {'cpu s':>8} {'speedup':>8} "
          f"{'saved MB':>9} {'ratio':>7} "
          f"{'rss MB':>8} {'tokens':>8}")
    warm = make_batch([16] * 2, [8, 4], len(tok), seed=0)
    for fn in (completion_logprobs, shared_prefix_logprobs, packed_logprobs):
        fwd_bwd(fn, model, warm, torch.ones(warm.completion_ids.shape))

    for P in prompt_lengths:
        batch = make_batch([P] * 8, [32] * 8, len(tok), seed=P)
        label = f"P={P} 1x8 T=32"
        plain = measure(completion_logprobs, model, batch, reps)
        print(row(label, "plain", plain, count_tokens(model, completion_logprobs, batch), None), flush=True)
        shared = measure(shared_prefix_logprobs, model, batch, reps)
        print(row(label, "shared-prefix", shared, count_tokens(model, shared_prefix_logprobs, batch), plain),
              flush=True)

    g = torch.Generator().manual_seed(1)
    B, max_p, max_t = (16, 256, 128) if args.quick else (32, 512, 256)
    prompt_lens = torch.randint(16, max_p + 1, (B,), generator=g).tolist()
    completion_lens = torch.randint(8, max_t + 1, (B,), generator=g).tolist()
    batch = make_batch(prompt_lens, completion_lens, len(tok), seed=2)
    label = f"{B} rows P<={max_p} T<={max_t}"
    plain = measure(completion_logprobs, model, batch, reps)
    print(row(label, "padded", plain, count_tokens(model, completion_logprobs, batch), None), flush=True)
    packed = measure(packed_logprobs, model, batch, reps)
    print(row(label, "packed", packed, count_tokens(model, packed_logprobs, batch), plain), flush=True)
    padded = B * (max(prompt_lens) + max(completion_lens))
    print(f"real tokens in the varied batch: {sum(prompt_lens) + sum(completion_lens)}; the padded batch holds {padded}")


if __name__ == "__main__":
    main()
