"""Checkpoints: HF-loadable safetensors weights plus everything needed to resume exactly.

Layout of `RUN_DIR/checkpoints/step_000050/`: the model (`save_pretrained`, safetensors; a
LoRA adapter under LoRA), the tokenizer, `optimizer.pt` (optimizer, scheduler, RNG states) and
`trainer_state.json` (step, sampler state, data cursor), plus any extra part the trainer owns in
its own subdirectory (`critic/`: the value model and its optimizer). A checkpoint is written into a hidden
temporary directory, every file is fsynced, and the directory is renamed into place: a crash
mid-write never leaves a half checkpoint under a `step_*` name. The last `keep_last` are kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

STATE_FILE = "trainer_state.json"
OPTIM_FILE = "optimizer.pt"


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: str | Path, step: int, *, model, tokenizer, optimizer=None, scheduler=None,
                    state: dict[str, Any] | None = None, keep_last: int = 2, weights=None,
                    optimizer_state=None, extra_dirs: dict[str, Callable[[Path], None]] | None = None) -> Path:
    """`weights` / `optimizer_state`: full state dicts gathered from a sharded (FSDP2) model, which
    are saved instead of `model.state_dict()` / `optimizer.state_dict()`. `extra_dirs` maps a
    subdirectory name to a function that writes into it (e.g. the critic's `save`); it runs inside
    the temporary directory, so those files appear atomically with the rest."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if weights is not None:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
    else:
        model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    extra = {"rng": rng_state()}
    if optimizer_state is not None:
        extra["optimizer"] = optimizer_state
    elif optimizer is not None:
        extra["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        extra["scheduler"] = scheduler.state_dict()
    torch.save(extra, tmp / OPTIM_FILE)
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, **(state or {})}, indent=1))
    for name, write in (extra_dirs or {}).items():
        write(tmp / name)
    _fsync_tree(tmp)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = checkpoint_dir(run_dir)
    if not root.exists():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def load_checkpoint(path: str | Path, *, model, optimizer=None, scheduler=None) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG; return the trainer state dict."""
    path = Path(path)
    load_weights(model, path)
    extra = torch.load(path / OPTIM_FILE, map_location="cpu", weights_only=False)
    if optimizer is not None and "optimizer" in extra:
        optimizer.load_state_dict(extra["optimizer"])
    if scheduler is not None and "scheduler" in extra:
        scheduler.load_state_dict(extra["scheduler"])
    set_rng_state(extra["rng"])
    return json.loads((path / STATE_FILE).read_text())


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(full weights, optimizer/scheduler/RNG extras, trainer state) of a full-model checkpoint."""
    path = Path(path)
    extra = torch.load(path / OPTIM_FILE, map_location="cpu", weights_only=False)
    return read_weights(path), extra, json.loads((path / STATE_FILE).read_text())


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no .safetensors weights in this checkpoint")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def load_weights(model, path: Path) -> None:
    from safetensors.torch import load_file

    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
        return
    load_state_strict(model, read_weights(path), what=f"{path}: checkpoint")


def load_state_strict(model, state: dict[str, torch.Tensor], *, what: str = "weight sync") -> None:
    """Load full weights `state` into `model`; every parameter must be covered (a tied alias, such
    as an lm_head sharing the embedding's tensor, by its twin) and no key may be left over."""
    with torch.no_grad():
        missing, unexpected = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    loaded = {own[k].data_ptr() for k in state if k in own}
    missing = [k for k in missing if own[k].data_ptr() not in loaded]
    if missing or unexpected:
        raise RuntimeError(f"{what}: the weights do not match the model (missing {missing[:3]}"
                           f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                           f"{'...' if len(unexpected) > 3 else ''})")


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
