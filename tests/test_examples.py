"""Every example config validates (the real-model ones without loading the model)."""

from pathlib import Path

import pytest

from postrl.cli import TRAINERS, config_schema
from postrl.config import PrefConfig, load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def command_of(path: Path) -> str:
    """Every example starts with `# postrl COMMAND: what it does`."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# postrl "), f"{path.name}: first line must be '# postrl COMMAND: ...'"
    command = first.removeprefix("# postrl ").split(":", 1)[0]
    assert command in TRAINERS, f"{path.name}: unknown command {command!r}"
    return command


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_validates(path):
    cfg = load_config(path, schema=config_schema(command_of(path)))
    assert cfg.name


def test_dpo_example_trains_dpo_on_the_built_in_pairs():
    cfg = load_config(EXAMPLES[0].parent / "tiny_dpo.yaml", schema=PrefConfig)
    assert cfg.loss.name == "dpo" and cfg.data.source == "task:arithmetic_pairs" and cfg.needs_reference


def test_gsm8k_example_targets_the_real_model_and_math_verify():
    cfg = load_config(EXAMPLES[0].parent / "gsm8k_grpo.yaml")
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert cfg.rewards[0].name == "math_verify" and cfg.algorithm.kl_coef == 0.04
