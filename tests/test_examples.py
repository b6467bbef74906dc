"""Every example config validates (the real-model ones without loading the model)."""

from pathlib import Path

import pytest

from postrl.config import PrefConfig, RLConfig, SFTConfig, load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_validates(path):
    schema = SFTConfig if "sft" in path.name else PrefConfig if "dpo" in path.name else RLConfig
    cfg = load_config(path, schema=schema)
    assert cfg.name


def test_dpo_example_trains_dpo_on_the_built_in_pairs():
    cfg = load_config(EXAMPLES[0].parent / "tiny_dpo.yaml", schema=PrefConfig)
    assert cfg.loss.name == "dpo" and cfg.data.source == "task:arithmetic_pairs" and cfg.needs_reference


def test_gsm8k_example_targets_the_real_model_and_math_verify():
    cfg = load_config(EXAMPLES[0].parent / "gsm8k_grpo.yaml")
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert cfg.rewards[0].name == "math_verify" and cfg.algorithm.kl_coef == 0.04
