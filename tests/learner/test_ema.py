"""The EMA copy of the policy (GRPO-CARE's slowly updated reference): update rule and checkpoint."""

import pytest
import torch

from postrl.learner.ema import EmaModel


def _linear(value: float) -> torch.nn.Linear:
    m = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def test_ema_moves_every_k_steps_and_round_trips(tmp_path):
    policy = _linear(1.0)
    ema = EmaModel(policy, decay=0.9, every=2)
    with torch.no_grad():
        policy.weight.fill_(3.0)
    assert not ema.update(policy, 0)  # step 0: (0 + 1) % 2 != 0
    assert ema.model.weight.item() == 1.0
    assert ema.update(policy, 1)  # 0.9 * 1 + 0.1 * 3 = 1.2
    assert ema.model.weight.item() == pytest.approx(1.2)
    assert not ema.model.weight.requires_grad and policy.weight.item() == 3.0  # the policy is untouched
    ema.save(tmp_path / "e")
    other = EmaModel(_linear(0.0), decay=0.9, every=2)
    other.load(tmp_path / "e")
    assert torch.equal(other.model.weight, ema.model.weight)
    frozen = EmaModel(_linear(1.0), decay=1.0, every=1)
    assert not frozen.update(policy, 0) and frozen.model.weight.item() == 1.0
    with pytest.raises(FileNotFoundError, match="no EMA reference weights"):
        other.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="EMA decay must be in"):
        EmaModel(policy, decay=1.5, every=1)
