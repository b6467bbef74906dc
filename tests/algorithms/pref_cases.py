"""Builders of PrefInputs for the preference-loss tests: gradient on policy log-probs only."""

import math

import torch

from postrl.algorithms.preference import PrefInputs


LOG2 = math.log(2.0)


def close(x: torch.Tensor, expected, tol=1e-5):
    assert torch.allclose(x.detach(), torch.tensor(expected, dtype=x.dtype), atol=tol), (x, expected)


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x), the building block of the hand-computed values."""
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def t(values, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=grad)


def pair(chosen, rejected, chosen_ref=None, rejected_ref=None, *, chosen_len=None, rejected_len=None,
         **extra) -> PrefInputs:
    """Sequence-level pair inputs; the policy log-probs carry gradient, everything else does not."""
    n = len(chosen)
    return PrefInputs(
        t(chosen, grad=True), t(chosen_len or [1.0] * n), t(rejected, grad=True), t(rejected_len or [1.0] * n),
        chosen_ref_logps=None if chosen_ref is None else t(chosen_ref),
        rejected_ref_logps=None if rejected_ref is None else t(rejected_ref), **extra)


# Two pairs used across the pairwise tests:
#   example 1: log-ratios u_w = -1 - (-2) = +1, u_l = -3 - (-2) = -1, margin h = 2
#   example 2: log-ratios u_w = -2 - (-1) = -1, u_l = -1 - (-1) =  0, margin h = -1
TWO_PAIRS = dict(chosen=[-1.0, -2.0], rejected=[-3.0, -1.0], chosen_ref=[-2.0, -1.0], rejected_ref=[-2.0, -1.0])


def two_pairs(**extra) -> PrefInputs:
    return pair(**TWO_PAIRS, **extra)


def at_reference(seed: int = 0, B: int = 3) -> PrefInputs:
    """Random pairs with pi = pi_ref (every log-ratio 0)."""
    g = torch.Generator().manual_seed(seed)
    c, r = (-5 * torch.rand(B, generator=g)).tolist(), (-5 * torch.rand(B, generator=g)).tolist()
    return pair(c, r, c, r)


def full_inputs(seed: int = 0, B: int = 3, T: int = 4, K: int = 3) -> PrefInputs:
    """Every field of PrefInputs filled (paired, unpaired, listwise, token-level, online and extras).

    Policy tensors (`chosen_logps`, token log-probs, `list_logps`, `kl_logps`, `rationale_logps`,
    `ref_sample_logps`) carry gradient; reference tensors, masks, lengths, labels, scores, margins,
    win probabilities / rates and previous-iterate log-probs do not.
    """
    g = torch.Generator().manual_seed(seed)

    def lp(*shape, grad=False):
        return (-0.2 - 2 * torch.rand(*shape, generator=g)).requires_grad_(grad)

    mask = torch.ones(B, T)
    mask[0, -1] = 0.0  # one padded token
    ctok, rtok = lp(B, T, grad=True), lp(B, T, grad=True)
    ctok_ref, rtok_ref = lp(B, T), lp(B, T)
    list_logps, list_ref = lp(B, K), lp(B, K)
    list_logps[0, -1] = list_ref[0, -1] = float("-inf")  # the first prompt has K - 1 responses
    inp = PrefInputs(
        chosen_logps=lp(B, grad=True), chosen_lengths=mask.sum(-1), rejected_logps=lp(B, grad=True),
        rejected_lengths=torch.full((B,), float(T)), chosen_ref_logps=lp(B), rejected_ref_logps=lp(B),
        chosen_token_logps=ctok, chosen_token_mask=mask, rejected_token_logps=rtok,
        rejected_token_mask=torch.ones(B, T), chosen_token_ref_logps=ctok_ref, rejected_token_ref_logps=rtok_ref,
        labels=torch.tensor([1.0, 0.0, 1.0][:B]), kl_logps=lp(B, grad=True), kl_ref_logps=lp(B),
        list_logps=list_logps.requires_grad_(True), list_ref_logps=list_ref,
        list_lengths=torch.full((B, K), float(T)), scores=torch.tensor([[2.0, 1.0, 0.0]] * B),
        margins=torch.randn(B, generator=g), rationale_logps=lp(B, grad=True))
    o = torch.Generator().manual_seed(seed + 100)  # its own stream: the fields above do not move
    inp.chosen_win_prob = torch.rand(B, generator=o)
    inp.chosen_win_rate, inp.rejected_win_rate = torch.rand(B, generator=o), torch.rand(B, generator=o)
    inp.ref_sample_logps = (-0.2 - 2 * torch.rand(B, generator=o)).requires_grad_(True)
    inp.chosen_prev_logps, inp.rejected_prev_logps = -2 * torch.rand(B, generator=o), -2 * torch.rand(B, generator=o)
    return inp
