"""Every preference entry of the registry keeps the registry contract.

A loss returns a finite per-example loss [B] with scalar metrics; it declares "reference" exactly
when it reads reference log-probs (reference-free ones run with every reference field missing),
and every other need word likewise; gradients reach the policy log-probs it reads, never the
reference ones (the inputs give those no gradient, and a loss that detached the policy would fail).
"""

import pytest
import torch

import postrl.algorithms  # noqa: F401  (imports every family module: all entries registered)
from postrl.algorithms.registries import PREFERENCE_LOSSES

from algorithms.pref_cases import full_inputs

ENTRIES = list(PREFERENCE_LOSSES)
NAMES = [e.name for e in ENTRIES]
MODULES = {  # the entries each family module registers
    "preference": {"dpo"},
    "preference_pairwise": {"ipo", "hinge", "cdpo", "rdpo", "nca", "apo_zero", "apo_down", "bco"},
    "preference_auxiliary": {"dpo_rationale", "tgdpo", "modpo", "hypo"},
    "preference_reference_free": {"simpo", "orpo", "cpo"},
    "preference_unpaired": {"kto"},
    "preference_listwise": {"lipo", "cpl"},
    "preference_online": {"xpo", "nash_md", "nash_mp", "inpo", "sppo"},
}

# the fields each need word stands for (procedure-only words, such as mixture_opponent, have none)
FIELDS = {
    "reference": ["chosen_ref_logps", "rejected_ref_logps", "chosen_token_ref_logps", "rejected_token_ref_logps",
                  "kl_ref_logps", "list_ref_logps"],
    "token_logps": ["chosen_token_logps", "chosen_token_mask", "rejected_token_logps", "rejected_token_mask"],
    "kto_kl": ["kl_logps", "kl_ref_logps"],
    "online_kl": ["kl_logps", "kl_ref_logps"],
    "margins": ["margins"],
    "rationales": ["rationale_logps"],
    "reference_sample": ["ref_sample_logps"],
    "win_prob": ["chosen_win_prob"],
    "win_rates": ["chosen_win_rate", "rejected_win_rate"],
    "previous_iterate": ["chosen_prev_logps", "rejected_prev_logps"],
    "prox_opponent": ["chosen_prev_logps"],
    "mixture_opponent": [],
}
POLICY = ["chosen_logps", "rejected_logps", "chosen_token_logps", "rejected_token_logps", "list_logps",
          "kl_logps", "rationale_logps", "ref_sample_logps"]


def test_the_family_modules_register_the_issue_losses():
    for module, names in MODULES.items():
        assert {e.name for e in ENTRIES if e.fn.__module__ == f"postrl.algorithms.{module}"} == names, module
    for e in ENTRIES:
        assert e.arxiv or e.name == "cdpo", e.name  # cDPO is a note without an arXiv id
        assert set(e.needs) <= set(FIELDS), e.needs
        assert e.formula and e.fn.__doc__.split("\n", 1)[0].endswith("."), e.name


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_finite_per_example_and_reaches_the_policy(name):
    inp = full_inputs()
    out = PREFERENCE_LOSSES[name](inp)
    assert out.loss.shape == (3,) and torch.isfinite(out.loss).all()
    assert all(v.dim() == 0 and not v.requires_grad for v in out.metrics.values())
    out.loss.sum().backward()
    grads = [getattr(inp, f).grad for f in POLICY if getattr(inp, f).grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("need", [n for n in FIELDS if FIELDS[n]])
def test_needs_are_declared_exactly(name, need):
    inp, needs = full_inputs(), PREFERENCE_LOSSES.get(name).needs
    declared = {f for d in needs if d != need for f in FIELDS[d]}  # e.g. kto_kl and online_kl share fields
    for f in set(FIELDS[need]) - declared:
        setattr(inp, f, None)
    if need in needs:
        with pytest.raises(ValueError, match="needs"):
            PREFERENCE_LOSSES[name](inp)
    else:  # the entry must not read what it did not ask for
        assert torch.isfinite(PREFERENCE_LOSSES[name](inp).loss).all()
