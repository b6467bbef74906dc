"""Starting a run: refuse to overwrite a run by accident, write the resolved config, seed, and pick
the checkpoint to resume from (a damaged latest one falls back to the previous, trainers/faults.py)."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from postrl.config import dump_config
from postrl.learner.checkpoint import latest_checkpoint
from postrl.trainers.faults import clear_faults, resume_checkpoint


def start_run(cfg, resume: bool) -> Path | None:
    """Prepare `cfg.run_dir` and seed; return the checkpoint to resume from (None: fresh run)."""
    run_dir = cfg.run_dir
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None and not resume:
        raise FileExistsError(f"{run_dir} already holds checkpoints (last: {ckpt.name}); pass --resume "
                              "to continue that run, or choose another output_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        clear_faults(run_dir)
    dump_config(cfg, run_dir / "config.yaml")
    seed_everything(cfg.seed)
    return resume_checkpoint(run_dir) if resume and ckpt is not None else None


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
