"""Checkpoints: HF-loadable safetensors weights plus everything needed to resume exactly.

Layout of `RUN_DIR/checkpoints/step_000050/`: the model (`save_pretrained`, safetensors; a
LoRA adapter under LoRA), the tokenizer, `optimizer.pt` (optimizer, scheduler, RNG states) and
`trainer_state.json` (step, sampler state, data cursor), plus any extra part the trainer owns in
its own subdirectory (`critic/`: the value model and its optimizer). A checkpoint is written into a hidden
temporary directory, every file is hashed into `manifest.json` and fsynced (learner/checkpoint_manifest.py),
and the directory is renamed into place: a crash mid-write never leaves a half checkpoint under a
`step_*` name, and loading checks the files against the manifest. A save that fails (a full disk)
removes its temporary copy and raises; the older checkpoints are untouched. Directories leave
(a replaced step, pruning past `keep_last`) by a rename to a hidden name before they are deleted,
so a kill mid-delete never leaves a half-deleted `step_*` behind.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from postrl.learner.checkpoint_manifest import CheckpointCorrupt, fsync_dir, verify, write_manifest
from postrl.run_stop import DiskFull

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
    for stale in [*root.glob(".tmp_step_*"), *root.glob(".trash_*")]:  # left by a run killed mid-save
        shutil.rmtree(stale, ignore_errors=True)
    try:
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
        write_manifest(tmp)  # hashes and fsyncs every file, then the manifest
    except BaseException as e:
        full = _disk_full(e, root)  # measured before the partial copy frees its space
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise DiskFull(_disk_full_message(root, final, model, weights, optimizer is not None)) from e
        raise
    _retire(final)  # re-saving the same step (e.g. after a resume): the old copy leaves first
    os.replace(tmp, final)
    fsync_dir(root)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        _retire(old)
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


def check_checkpoint(path: str | Path) -> None:
    """Raise `CheckpointCorrupt` if `path`'s files differ from its manifest; warn if it has none."""
    if not verify(path):
        warnings.warn(f"{path}: no manifest.json (a checkpoint written before postrl verified "
                      "checkpoints); loading it unchecked", stacklevel=3)


def load_checkpoint(path: str | Path, *, model, optimizer=None, scheduler=None) -> dict[str, Any]:
    """Verify, then restore weights, optimizer, scheduler and RNG; return the trainer state dict."""
    path = Path(path)
    check_checkpoint(path)
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
    check_checkpoint(path)
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


def pick_checkpoint(run_dir: str | Path) -> tuple[Path | None, list[CheckpointCorrupt]]:
    """The newest checkpoint that matches its manifest (or has none), and the newer ones that did
    not: a truncated or damaged latest checkpoint falls back to the one before it."""
    rejected = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            verify(path)
            return path, rejected
        except CheckpointCorrupt as e:
            rejected.append(e)
    return None, rejected


def _retire(path: Path) -> None:
    """Delete a checkpoint directory by renaming it out of the `step_*` names first."""
    if not path.exists():
        return
    trash = path.with_name(f".trash_{path.name}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def _disk_full(e: BaseException, root: Path) -> bool:
    """Whether a failed save ran out of space. torch.save reports ENOSPC as a RuntimeError ("file
    write failed") and safetensors as "os error 28", so the errno chain, the message, and a
    nearly-empty disk all count (not for Ctrl-C, which also passes through here)."""
    if not isinstance(e, Exception):
        return False
    while e is not None:
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(e) or "os error 28" in str(e):
            return True
        e = e.__cause__ or e.__context__
    try:
        return shutil.disk_usage(root).free < (1 << 20)
    except OSError:
        return False


def _disk_full_message(root: Path, final: Path, model, weights, with_optimizer: bool) -> str:
    free = shutil.disk_usage(root).free
    previous = list_checkpoints(root.parent)
    if previous:
        need = sum(f.stat().st_size for f in previous[-1].rglob("*") if f.is_file())
        basis = f"the size of {previous[-1].name}"
    else:  # no earlier checkpoint to measure: weights, plus AdamW's two moments of the same size
        tensors = weights.values() if weights is not None else model.state_dict().values()
        need = sum(t.numel() * t.element_size() for t in tensors) * (3 if with_optimizer else 1)
        basis = "estimated from the model size" + (" with AdamW's two moments" if with_optimizer else "")
    kept = f"{previous[-1].name} is intact" if previous else "there is no earlier checkpoint"
    return (f"disk full while saving checkpoint {final.name} in {root}: {_mb(free)} free, a checkpoint "
            f"needs about {_mb(need)} ({basis}); the partial copy was removed and {kept}. Free at least "
            f"{_mb(max(need - free, 0))} there (older checkpoints are pruned only after a new one is "
            "written) or set output_dir on a bigger disk, then rerun with --resume")


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"
