"""APO momentum and the frozen snapshots of `postrl online` (trainers/online_iterates.py), by hand."""

import torch

from postrl.trainers.online_iterates import Snapshots, extrapolate


def test_extrapolate_is_theta_plus_alpha_times_the_last_step():
    # 1.0 + 0.3 * (1.0 - 0.5) = 1.15;  2.0 + 0.3 * (2.0 - 3.0) = 1.7
    out = extrapolate({"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([0.5, 3.0])}, 0.3)
    assert torch.allclose(out["w"], torch.tensor([1.15, 1.7]))
    # alpha 0: the iterate itself (iterative DPO)
    same = extrapolate({"w": torch.tensor([1.0])}, {"w": torch.tensor([7.0])}, 0.0)
    assert torch.equal(same["w"], torch.tensor([1.0]))


def _model(value: float):
    m = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def _set(m, value: float):
    with torch.no_grad():
        m.weight.fill_(value)


def test_start_iteration_extrapolates_from_the_last_unextrapolated_iterate_and_refreshes_the_copies():
    policy, ref = _model(1.0), _model(1.0)
    snap = Snapshots(policy, ref, refresh_reference=True, iterate=True, momentum=0.5, prox_steps=None)
    _set(policy, 2.0)  # iteration 1 ends at theta_1 = 2 (theta_0 = 1)
    snap.start_iteration(policy)
    # theta^_1 = 2 + 0.5 * (2 - 1) = 2.5, which is also the new reference and previous iterate
    assert policy.weight.item() == 2.5 and ref.weight.item() == 2.5 and snap.iterate.weight.item() == 2.5
    _set(policy, 3.0)  # iteration 2 trains from 2.5 to theta_2 = 3
    snap.start_iteration(policy)
    # Nesterov's sequence uses the un-extrapolated iterates: 3 + 0.5 * (3 - 2) = 3.5 (not 3 + 0.5 * (3 - 2.5))
    assert policy.weight.item() == 3.5 and ref.weight.item() == 3.5
    assert not snap.iterate.weight.requires_grad


def test_without_momentum_the_reference_becomes_the_current_policy():
    policy, ref = _model(1.0), _model(1.0)
    snap = Snapshots(policy, ref, refresh_reference=True, iterate=False, momentum=0.0, prox_steps=None)
    _set(policy, 4.0)
    snap.start_iteration(policy)
    assert policy.weight.item() == 4.0 and ref.weight.item() == 4.0 and snap.last is None


def test_prox_phases_alternate_every_prox_steps_updates():
    policy = _model(0.0)
    snap = Snapshots(policy, None, refresh_reference=False, iterate=False, momentum=0.0, prox_steps=2)
    assert snap.phase == "half" and snap.opponent() is snap.anchor
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0], start=1):
        _set(policy, value)
        snap.after_update(policy)
        if step == 2:  # end of the half phase: pi_{k+1/2} <- policy (2.0); the opponent is now the half-step
            assert snap.phase == "full" and snap.half.weight.item() == 2.0 and snap.anchor.weight.item() == 0.0
            assert snap.opponent() is snap.half
    # end of the full phase: anchor <- policy (4.0), back to half
    assert snap.phase == "half" and snap.in_phase == 0 and snap.anchor.weight.item() == 4.0
    assert snap.state() == {"prox_phase": "half", "prox_in_phase": 0}


def test_snapshots_save_and_load_round_trip(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1)
    torch.manual_seed(0)
    policy, ref = Qwen2ForCausalLM(cfg), Qwen2ForCausalLM(cfg)
    snap = Snapshots(policy, ref, refresh_reference=True, iterate=True, momentum=0.2, prox_steps=None)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(1.0)
    snap.start_iteration(policy)
    for name, write in snap.writers().items():
        write(tmp_path / name)
    torch.manual_seed(1)
    policy2, ref2 = Qwen2ForCausalLM(cfg), Qwen2ForCausalLM(cfg)
    fresh = Snapshots(policy2, ref2, refresh_reference=True, iterate=True, momentum=0.2, prox_steps=None)
    fresh.load(tmp_path, snap.state())
    for a, b in zip(ref.parameters(), ref2.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(snap.iterate.parameters(), fresh.iterate.parameters()):
        assert torch.equal(a, b)
    assert all(torch.equal(snap.last[k], fresh.last[k]) for k in snap.last)
