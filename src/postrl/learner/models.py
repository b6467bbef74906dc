"""Loading the policy, its tokenizer and the frozen reference model.

`model.name_or_path` is an HF hub id or a local directory (the real `from_pretrained` path), or
`tiny` for the embedded from-config model. Under LoRA the reference is the same network with the
adapter disabled, so no second copy of the weights is held.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch

from postrl.config import ModelSection


def quiet_transformers() -> None:
    """Silence transformers' per-file progress bars and info logs; postrl shows its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"model.device: {name!r} asked for but CUDA is not available; use `auto` or `cpu`")
    return device


def _dtype(name: str):
    return {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
            "float16": torch.float16}[name]


def load_tokenizer(cfg: ModelSection):
    quiet_transformers()
    if cfg.name_or_path == "tiny" and cfg.tokenizer is None:
        from postrl.learner.tiny import build_tokenizer

        tok = build_tokenizer()
    else:
        from transformers import AutoTokenizer

        source = cfg.tokenizer or cfg.name_or_path
        try:
            tok = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
        except (OSError, ValueError) as e:
            raise ValueError(f"model.tokenizer: could not load a tokenizer from {source!r} "
                             f"(not a local directory and not reachable on the hub): {e}") from None
    if cfg.chat_template:
        template = cfg.chat_template
        if template.endswith(".jinja") and Path(template).exists():
            template = Path(template).read_text(encoding="utf-8")
        tok.chat_template = template
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer of {cfg.name_or_path!r} has neither a pad nor an EOS token; "
                             "give one with model.tokenizer pointing to a fixed tokenizer")
        tok.pad_token = tok.eos_token  # common for causal LMs; masks keep pads out of the loss
    tok.padding_side = "left"
    return tok


def load_model(cfg: ModelSection, tokenizer, device: torch.device):
    """The trainable policy (LoRA-wrapped when `model.lora.enabled`)."""
    if cfg.name_or_path == "tiny":
        from postrl.learner.tiny import build_model

        model = build_model(tokenizer, **cfg.tiny.model_dump())
        if cfg.dtype not in ("auto", "float32"):
            model = model.to(_dtype(cfg.dtype))
    else:
        model = _from_pretrained(cfg.name_or_path, cfg)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model's embedding has "
                         f"{model.get_input_embeddings().weight.shape[0]} rows; use the tokenizer "
                         "that belongs to the model (model.tokenizer)")
    model.to(device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    model.config.use_cache = False  # the learner never uses a cache; the engine asks for one
    return model


def _from_pretrained(name: str, cfg: ModelSection):
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": _dtype(cfg.dtype), "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    try:
        return AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except OSError as e:
        raise ValueError(f"model.name_or_path: could not load {name!r} (not a local model directory "
                         f"and not reachable on the hub): {e}") from None


def load_reference(cfg: ModelSection, policy, tokenizer, device: torch.device):
    """A frozen reference model, or None under LoRA (use `reference_context` on the policy)."""
    if cfg.ref_model or cfg.reference_soup:
        if cfg.reference_soup:  # SALSA: the weight average of several models (learner/soup.py)
            from postrl.learner.soup import load_soup

            ref, what = load_soup(cfg, tokenizer, lambda name: _from_pretrained(name, cfg)), "model.reference_soup"
            if cfg.dtype not in ("auto", "float32"):
                ref = ref.to(_dtype(cfg.dtype))
        else:
            ref, what = _from_pretrained(cfg.ref_model, cfg), f"model.ref_model {cfg.ref_model!r}"
        if ref.get_input_embeddings().weight.shape[0] != policy.get_input_embeddings().weight.shape[0]:
            raise ValueError(f"{what} has a different vocabulary size from "
                             "the policy; the reference must share the policy's tokenizer")
    elif cfg.lora.enabled:
        return None
    else:
        ref = copy.deepcopy(policy)
    ref.to(device).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def reference_context(policy, ref):
    """Context in which `policy` computes reference log-probs when `ref` is None (LoRA)."""
    if ref is None:
        return policy.disable_adapter()
    return contextlib.nullcontext()


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
