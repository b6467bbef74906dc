"""Every preference entry of the family modules keeps the registry contract.

A loss returns a finite per-example loss [B] with scalar metrics; it declares "reference" exactly
when it reads reference log-probs (reference-free ones run with every reference field missing),
and every other need word likewise; gradients reach the policy log-probs it reads, never the
reference ones (the inputs give those no gradient, and a loss that detached the policy would fail).
"""

import pytest
import torch

from postrl.algorithms import preference_auxiliary, preference_listwise, preference_pairwise  # noqa: F401
from postrl.algorithms import preference_reference_free, preference_unpaired  # noqa: F401
from postrl.algorithms.registries import PREFERENCE_LOSSES

from algorithms.pref_cases import full_inputs

MODULES = {"postrl.algorithms." + m for m in ("preference_pairwise", "preference_auxiliary",
                                              "preference_reference_free", "preference_unpaired",
                                              "preference_listwise")}
ENTRIES = [e for e in PREFERENCE_LOSSES if e.fn.__module__ in MODULES]
NAMES = [e.name for e in ENTRIES]

# the fields each need word stands for
FIELDS = {
    "reference": ["chosen_ref_logps", "rejected_ref_logps", "chosen_token_ref_logps", "rejected_token_ref_logps",
                  "kl_ref_logps", "list_ref_logps"],
    "token_logps": ["chosen_token_logps", "chosen_token_mask", "rejected_token_logps", "rejected_token_mask"],
    "kto_kl": ["kl_logps", "kl_ref_logps"],
    "online_kl": ["kl_logps", "kl_ref_logps"],
    "margins": ["margins"],
    "rationales": ["rationale_logps"],
}
POLICY = ["chosen_logps", "rejected_logps", "chosen_token_logps", "rejected_token_logps", "list_logps",
          "kl_logps", "rationale_logps"]


def test_the_family_modules_register_the_issue_losses():
    assert set(NAMES) == {"ipo", "hinge", "cdpo", "rdpo", "nca", "apo_zero", "apo_down", "bco", "dpo_rationale",
                          "tgdpo", "modpo", "hypo", "simpo", "orpo", "cpo", "kto", "lipo", "cpl"}
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
@pytest.mark.parametrize("need", list(FIELDS))
def test_needs_are_declared_exactly(name, need):
    inp, needs = full_inputs(), PREFERENCE_LOSSES.get(name).needs
    declared = {f for d in needs if d != need for f in FIELDS[d]}  # kto_kl and online_kl share fields
    for f in set(FIELDS[need]) - declared:
        setattr(inp, f, None)
    if need in needs:
        with pytest.raises(ValueError, match="needs"):
            PREFERENCE_LOSSES[name](inp)
    else:  # the entry must not read what it did not ask for
        assert torch.isfinite(PREFERENCE_LOSSES[name](inp).loss).all()
