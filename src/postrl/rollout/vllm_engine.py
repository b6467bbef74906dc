"""The `vllm` engine: the engine interface (`generate`, `sync_weights`) on a vLLM `LLM` (GPU only).

vLLM is an optional extra and is imported only when an engine is constructed, so this module
imports on any machine. Two placements use the same class:
- colocated: `VLLMEngine(learner_model, tokenizer, ...)` in the learner process. vLLM is built
  from the model's config with dummy weights, then receives the learner's weights (LoRA merged)
  through `sync_weights`, so no checkpoint is read twice;
- worker: `VLLMEngine("model/dir-or-hub-id", tokenizer, ...)` inside a Ray actor that owns its
  GPUs; the pool sends it the learner's state dict after each update.

Behaviour log-probs. postrl's convention (the `hf` engine, the learner) is the log-prob of each
sampled token under the temperature-scaled, untruncated distribution. vLLM returns, per
`logprobs_mode`, either `raw_logprobs` (its default: before temperature) or `processed_logprobs`
(after temperature *and* top-k/top-p: the distribution actually sampled). This engine always sets
`processed_logprobs` (vLLM >= 0.10.2). With top_k = 0 and top_p = 1 the two conventions are
equal; with truncation vLLM's value is the truncated, renormalised log-prob, larger than the `hf`
engine's by -log(probability mass kept) at that step.

Each sample is its own request with a seed derived from (seed, first_index + prompt, sample), so a
shard of the prompts draws the same samples as the whole batch; vLLM's prefix cache computes the
full KV blocks of a prompt shared by n requests once. Samples are reproducible only as far as vLLM's kernels are
batch-invariant (`VLLM_BATCH_INVARIANT=1` in recent versions).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from typing import Any, Iterable, Iterator

import torch

from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams

INSTALL_HINT = "pip install 'postrl[vllm]' on a CUDA machine"
_SYNC_CHUNK_BYTES = 1 << 30  # bounds transient merged-LoRA tensors and one cross-process RPC message


def import_vllm():
    """The vllm module, or an ImportError that says how to get it."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"the `vllm` rollout engine needs vLLM, which is not installed ({e}); "
                          f"{INSTALL_HINT}, or use rollout.engine=hf") from None
    return vllm


class VLLMEngine:
    shares_model = False
    """vLLM holds its own copy of the weights: the trainer must call `sync_weights` after updates."""

    def __init__(self, model, tokenizer, *, micro_batch_size: int = 256,
                 gpu_memory_utilization: float | None = None,
                 lora_scaling: float | dict[str, float] | None = None, **llm_options: Any):
        """`model`: the learner's nn.Module (colocated) or a model directory / hub id (worker).

        `micro_batch_size` becomes vLLM's `max_num_seqs` (sequences decoded together).
        `gpu_memory_utilization`: fraction of the GPU vLLM may take (weights + KV cache); default
        0.3 when colocated, so the learner keeps the rest, else vLLM's own default.
        `lora_scaling`: LoRA alpha/r (one number, or per module) for state dicts that carry
        adapters; read from the model itself when a peft model is given.
        `llm_options` go to `vllm.LLM` unchanged (dtype, max_model_len, tensor_parallel_size,
        enable_sleep_mode, enforce_eager, ...).
        """
        vllm = import_vllm()
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set one (e.g. tokenizer.pad_token = "
                             "tokenizer.eos_token) before generating")
        if llm_options.get("logprobs_mode", "processed_logprobs") != "processed_logprobs":
            raise ValueError("the vllm engine needs logprobs_mode='processed_logprobs': behaviour "
                             "log-probs must include the temperature (see this module's docstring)")
        self.tokenizer, self.pad_id = tokenizer, tokenizer.pad_token_id
        self._vllm_sampling_params = vllm.SamplingParams
        colocated = isinstance(model, torch.nn.Module)
        self.eos_ids = eos_token_ids(model if colocated else None, tokenizer)
        self.lora_scaling = lora_scalings(model) if colocated and lora_scaling is None else lora_scaling
        self.sleep_mode = bool(llm_options.get("enable_sleep_mode", False))
        self._asleep: set[str] = set()  # memory tags vLLM has released ("weights", "kv_cache")

        options = {"max_num_seqs": micro_batch_size, **llm_options,
                   "logprobs_mode": "processed_logprobs",
                   # gives every worker the `postrl_load_weights` method that `sync_weights` calls
                   "worker_extension_cls": f"{__name__}.WeightLoader"}
        if gpu_memory_utilization is not None or colocated:
            options["gpu_memory_utilization"] = gpu_memory_utilization or 0.3
        if options.get("tensor_parallel_size", 1) == 1:
            # The engine core then runs in this process: weight sync hands tensors over by
            # reference, and a colocated vLLM shares the learner's CUDA context.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if colocated:
            self._config_dir = _config_dir(model, tokenizer)  # kept alive with the engine
            source, options["load_format"] = self._config_dir.name, "dummy"
        else:
            source = str(model)
        self.llm = vllm.LLM(model=source, **options)
        if colocated:
            self.sync_weights(model)
        self._sleep()

    def sync_weights(self, weights) -> None:
        """Load the learner's weights (an nn.Module or a state dict) into vLLM."""
        state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
        self._wake(["weights"])  # a sleeping model's memory is unmapped: wake it before writing
        for chunk in _chunks(vllm_weights(state, self.lora_scaling), _SYNC_CHUNK_BYTES):
            self.llm.collective_rpc("postrl_load_weights", args=(chunk,))
        self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams, seed: int = 0, *,
                 first_index: int = 0) -> RolloutBatch:
        """n completions for each prompt; completions of prompt i get group id i."""
        seeds = request_seeds(len(prompt_ids), params.n, seed, first_index)
        # a TokensPrompt is a TypedDict: the token ids go in unchanged, no re-tokenisation
        prompts = [{"prompt_token_ids": list(p)} for p in prompt_ids for _ in range(params.n)]
        sampling = [self._vllm_sampling_params(**sampling_kwargs(params, s, self.eos_ids)) for s in seeds]
        self._wake(["weights", "kv_cache"])
        try:
            outputs = self.llm.generate(prompts, sampling_params=sampling, use_tqdm=False)
        finally:
            self._sleep()
        group_ids = [i for i in range(len(prompt_ids)) for _ in range(params.n)]
        return batch_from_outputs(outputs, group_ids, self.pad_id)

    def _sleep(self) -> None:
        """Sleep mode: free the KV cache and move weights to CPU so the learner gets the GPU."""
        if self.sleep_mode and not self._asleep:
            # level 1 keeps a CPU copy of the weights, so generating twice without a sync (an
            # evaluation, a resumed step) is still correct; level 2 would discard them.
            self.llm.sleep(level=1)
            self._asleep = {"weights", "kv_cache"}

    def _wake(self, tags: list[str]) -> None:
        todo = [t for t in tags if t in self._asleep]
        if todo:  # waking memory that is already mapped would map it twice
            self.llm.wake_up(tags=todo)
            self._asleep -= set(todo)


class WeightLoader:
    """Mixed into each vLLM worker by vLLM (`worker_extension_cls`); runs in the worker."""

    def postrl_load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        # The model's own loader maps HF names onto vLLM's fused layers (qkv_proj, gate_up_proj),
        # shards them for tensor parallelism and skips a tied lm_head.
        self.model_runner.model.load_weights(weights=weights)


# ------------------------------------------------------------------------ pure conversion logic
def request_seeds(num_prompts: int, n: int, seed: int, first_index: int = 0) -> list[int]:
    """One seed per (prompt, sample), prompt-major, from (seed, first_index + prompt, sample).

    A hash rather than seed + offset, so nearby steps and prompts get unrelated streams; the
    result fits in 63 bits (vLLM seeds a torch.Generator per request).
    """
    out = []
    for i in range(num_prompts):
        for j in range(n):
            digest = hashlib.blake2b(f"{seed}:{first_index + i}:{j}".encode(), digest_size=8).digest()
            out.append(int.from_bytes(digest, "little") >> 1)
    return out


def sampling_kwargs(params: SamplingParams, seed: int, eos_ids: list[int]) -> dict[str, Any]:
    """`vllm.SamplingParams` keyword arguments for one sample of `params`."""
    return {
        "n": 1,  # one request per sample, so that each sample has its own seed
        "temperature": 0.0 if params.greedy else params.temperature,  # vLLM: 0 means greedy
        "top_p": 1.0 if params.greedy else params.top_p,
        "top_k": 0 if params.greedy else params.top_k,  # 0 disables top-k, as in postrl
        "seed": None if params.greedy else seed,
        "max_tokens": params.max_new_tokens,
        "logprobs": 0,  # the sampled token's log-prob only
        # the hf engine's EOS set: EOS ends a sequence and stays in the completion
        "stop_token_ids": list(eos_ids),
        "stop": list(params.stop) or None,
        "include_stop_str_in_output": True,
        # stop strings are matched on text; without them decoding text is wasted work
        "detokenize": bool(params.stop),
        "skip_special_tokens": False,
    }


def batch_from_outputs(outputs: Iterable[Any], group_ids: list[int], pad_id: int) -> RolloutBatch:
    """A RolloutBatch from vLLM `RequestOutput`s: one row per completion, request k in group k.

    Reads `out.prompt_token_ids` and, per `CompletionOutput` in `out.outputs`, `token_ids`,
    `logprobs` (per position a mapping token id -> Logprob(logprob=...), holding at least the
    sampled token) and `finish_reason`. When vLLM stops on a stop string, the token that
    completed it is the last one kept, as in the hf engine.
    """
    prompts, completions, behavior, groups, finish = [], [], [], [], []
    for out, group in zip(outputs, group_ids, strict=True):
        for c in out.outputs:
            tokens = list(c.token_ids)
            if tokens and c.logprobs is None:
                raise ValueError("vLLM returned no log-probs: the request needs logprobs=0")
            if tokens and len(c.logprobs) != len(tokens):
                raise ValueError(f"vLLM returned {len(c.logprobs)} log-probs for {len(tokens)} tokens")
            prompts.append(list(out.prompt_token_ids))
            completions.append(tokens)
            behavior.append([step[t].logprob for step, t in zip(c.logprobs or [], tokens)])
            groups.append(group)
            finish.append(c.finish_reason)
    return RolloutBatch.from_token_lists(prompts, completions, pad_id, behavior=behavior, group_ids=groups,
                                         metadata={"finish_reason": finish})


_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.(?P<adapter>[^.]+)\.weight$")


def vllm_weights(state: dict[str, torch.Tensor],
                 lora_scaling: float | dict[str, float] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """The learner's weights under HF checkpoint names (what vLLM's loaders read), LoRA merged.

    A peft state dict names the base weight `<module>.base_layer.weight` next to
    `<module>.lora_A.<adapter>.weight` [r, in] and `lora_B` [out, r]; the merged weight is
    W + scaling * B @ A, computed in float32 and cast back to W's dtype. Merging here, rather
    than `merge_adapter()`/`unmerge_adapter()` on the model, leaves the learner's weights
    untouched. Plain state dicts pass through unchanged. DoRA and LoRA on embeddings are refused.
    """
    lora: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in state.items():
        if "lora_magnitude_vector" in name or "lora_embedding_" in name:
            raise ValueError(f"weight sync to vLLM merges plain LoRA on linear layers only; found {name!r} "
                             "(DoRA or LoRA on embeddings)")
        if m := _LORA_KEY.match(name):
            lora.setdefault(m["module"], {})[m["ab"]] = t
    for name, t in state.items():
        if _LORA_KEY.match(name) or ".original_module." in name:
            continue  # adapter factors are merged below; a modules_to_save original is superseded
        if name.endswith(".base_layer.weight") and (module := name[: -len(".base_layer.weight")]) in lora:
            pair = lora[module]
            delta = pair["B"].float() @ pair["A"].float()
            t = (t.float() + _scaling(lora_scaling, module) * delta).to(t.dtype)
        yield _hf_name(name), t


def lora_scalings(model) -> dict[str, float] | None:
    """Per-module LoRA scaling of a peft model (alpha/r, alpha/sqrt(r) under rsLoRA, rank and
    alpha patterns included), keyed like its state dict; None for a model without adapters."""
    out = {}
    for name, module in model.named_modules():
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, dict) and hasattr(module, "lora_A") and scaling:
            adapters = getattr(module, "active_adapters", None) or list(scaling)
            out[name] = float(scaling[adapters[0]])
    return out or None


def eos_token_ids(model, tokenizer) -> list[int]:
    """EOS ids as the hf engine uses them: the model's generation_config and the tokenizer's."""
    config = getattr(model, "generation_config", None)
    eos = config.eos_token_id if config is not None else None
    ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    ids.discard(None)
    if not ids:
        raise ValueError("neither the model's generation_config nor the tokenizer has an EOS token")
    return sorted(ids)


def _scaling(lora_scaling, module: str) -> float:
    if isinstance(lora_scaling, dict) and module in lora_scaling:
        return lora_scaling[module]
    if isinstance(lora_scaling, (int, float)):
        return float(lora_scaling)
    raise ValueError(f"the weights carry a LoRA adapter on {module!r} but its scaling is unknown; "
                     "pass lora_scaling=alpha/r to the vllm engine (or give it the peft model)")


def _hf_name(name: str) -> str:
    name = name.removeprefix("base_model.model.")  # peft's wrapper
    name = name.replace(".base_layer.", ".")
    return re.sub(r"\.modules_to_save\.[^.]+\.", ".", name)


def _chunks(named: Iterable[tuple[str, torch.Tensor]], max_bytes: int) -> Iterator[list]:
    chunk, size = [], 0
    for name, t in named:
        chunk.append((name, t))
        size += t.numel() * t.element_size()
        if size >= max_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _config_dir(model, tokenizer) -> tempfile.TemporaryDirectory:
    """config.json, generation_config.json and the tokenizer of `model`, for vLLM to build from."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wrapper
    tmp = tempfile.TemporaryDirectory(prefix="postrl-vllm-")
    base.config.save_pretrained(tmp.name)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(tmp.name)
    tokenizer.save_pretrained(tmp.name)
    return tmp
