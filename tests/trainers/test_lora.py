"""LoRA: only adapters train, the reference is the adapter-disabled base, resume is exact."""

import json
import shutil

import pytest
import torch
from helpers import tiny_rl_config

from postrl.learner.checkpoint import list_checkpoints
from postrl.trainers import rl

pytestmark = pytest.mark.slow


def test_lora_run_trains_adapters_uses_the_base_as_reference_and_resumes(tmp_path):
    from safetensors.torch import load_file

    cfg = tiny_rl_config(tmp_path, **{"model.lora": {"enabled": True, "r": 4, "alpha": 8},
                                      "rewards": [{"name": "tiny_rewards:token_id_mean"}],
                                      "algorithm.kl_coef": 0.1, "train.steps": 3, "checkpoint.keep_last": 3})
    parts = rl.build(cfg)
    assert parts.learner.ref_model is None  # no second copy of the weights
    rl.train(cfg)
    metrics = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # fresh adapters (B=0): policy == base
    assert metrics[-1]["kl"] > 0
    final = list_checkpoints(cfg.run_dir)[-1]
    adapter = load_file(str(final / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)

    killed = tmp_path / "killed"
    shutil.copytree(cfg.run_dir, killed)
    shutil.rmtree(list_checkpoints(killed)[-1])
    rl.train(cfg.model_copy(update={"output_dir": str(killed)}), resume=True)
    resumed = load_file(str(list_checkpoints(killed)[-1] / "adapter_model.safetensors"))
    assert all(torch.equal(adapter[k], resumed[k]) for k in adapter)
