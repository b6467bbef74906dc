import os
import sys
from pathlib import Path

import pytest

# tests never reach a hub; fail fast instead of retrying downloads
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))



@pytest.fixture(scope="session")
def sft_warm_start(tmp_path_factory) -> str:
    """A tiny model after 400 SFT steps on 2-digit sums (greedy accuracy ~0.25): the shared start of
    the end-to-end tests whose claim is "this method raises accuracy", trained once per session."""
    from postrl.config import SFTConfig, resolve
    from postrl.trainers import sft

    out = tmp_path_factory.mktemp("sft_warm_start")
    tiny = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 256}
    warm = sft.train(resolve(SFTConfig, {
        "output_dir": str(out), "model": {"tiny": tiny},
        "data": {"source": "task:arithmetic", "task_kwargs": {"level": 2}},
        "train": {"steps": 400, "batch_size": 64, "micro_batch_size": 64, "lr": 3e-3, "warmup_steps": 20},
        "checkpoint": {"every": 400}, "logging": {"progress": False}}))
    return warm["model_dir"]
