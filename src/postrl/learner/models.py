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
        tok.chat_template = _chat_template(cfg.chat_template)
        try:  # a broken template fails here, once, not in the middle of encoding the dataset
            tok.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=True, tokenize=False)
        except Exception as e:  # noqa: BLE001 - jinja raises its own exception types
            raise ValueError(f"model.chat_template: the template fails on a one-message conversation "
                             f"({type(e).__name__}: {e}); fix the Jinja template") from None
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer of {cfg.name_or_path!r} has neither a pad nor an EOS token; "
                             "give one with model.tokenizer pointing to a fixed tokenizer")
        tok.pad_token = tok.eos_token  # common for causal LMs; masks keep pads out of the loss
    tok.padding_side = "left"
    return tok


def model_context(cfg: ModelSection) -> int | None:
    """Positions the policy was built for (`max_position_embeddings`, or `n_positions`), read from its
    config without loading weights; None when unknown. A longer sequence fails (learned positions)
    or degrades silently (RoPE extrapolation), so prompts are checked against it (data/chat.py)."""
    if cfg.name_or_path == "tiny":
        return cfg.tiny.max_position_embeddings
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(cfg.name_or_path, trust_remote_code=cfg.trust_remote_code)
    except Exception:  # noqa: BLE001 - unknown here; load_model reports a model that cannot load
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _chat_template(value: str) -> str:
    """The Jinja text of `model.chat_template`: the value itself, or the file it names."""
    if "{{" in value or "{%" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"model.chat_template = {value!r} is neither a Jinja template (no {{{{ or {{% in it) nor "
                         "an existing file; give the template text or the path of a .jinja file")
    text = path.read_text(encoding="utf-8")
    if "{{" not in text and "{%" not in text:
        raise ValueError(f"model.chat_template: {path} holds no Jinja template (no {{{{ or {{% in it)")
    return text


def check_vocabulary(name: str, model, tokenizer, key: str, compare_tokenizers: bool = True) -> None:
    """`model` (loaded from `name`) reads the policy tokenizer's ids: its embedding covers them and,
    when `name` has a tokenizer of its own, that tokenizer maps every token to the same id. Two
    vocabularies of one size but another order (Llama-2 and Mistral both have 32000) would give the
    model other tokens than the policy sampled, silently. `compare_tokenizers=False` (the policy's
    tokenizer is a `model.tokenizer` override, which may legitimately differ from the files next
    to the weights) keeps only the size check."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ValueError(f"{key} {name!r}: its embedding has {rows} rows but the policy's tokenizer has "
                         f"{len(tokenizer)} tokens; it must share the policy's tokenizer")
    files = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    if not compare_tokenizers or (Path(name).is_dir() and not any((Path(name) / f).exists() for f in files)):
        return  # no tokenizer of its own (transformers would build an empty one): sizes are all we know
    try:
        from transformers import AutoTokenizer

        own = AutoTokenizer.from_pretrained(name)
    except Exception:  # noqa: BLE001 - not loadable here: the embedding check is all we can do
        return
    mine, theirs = tokenizer.get_vocab(), own.get_vocab()
    if mine != theirs:
        diff = sorted(t for t in set(mine) | set(theirs) if mine.get(t) != theirs.get(t))
        shown = ", ".join(f"{t!r}: {mine.get(t)} vs {theirs.get(t)}" for t in diff[:3])
        raise ValueError(f"{key} {name!r} has another vocabulary than the policy's tokenizer ({len(diff)} tokens "
                         f"differ, e.g. {shown} (policy id vs its id)); use a model of the policy's family "
                         "(same tokenizer)")


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
            check_vocabulary(cfg.ref_model, ref, tokenizer, "model.ref_model", compare_tokenizers=cfg.tokenizer is None)
        ref_rows, rows = ref.get_input_embeddings().weight.shape[0], policy.get_input_embeddings().weight.shape[0]
        if ref_rows != rows:
            raise ValueError(f"{what} has a different vocabulary size from the policy ({ref_rows} embedding rows "
                             f"vs {rows}); the reference must share the policy's tokenizer")
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
