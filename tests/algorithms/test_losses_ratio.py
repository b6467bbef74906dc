"""Ratio-based policy losses: hand-computed regimes with the arithmetic, plus shared invariants."""

import math

import pytest
import torch

import postrl.algorithms.losses_ratio  # noqa: F401  (registers the entries)
from postrl.algorithms import POLICY_LOSSES
from postrl.algorithms.policy_losses import LossInputs

e, ln = math.exp, math.log
RATIO_LOSSES = ["dual_clip", "gspo", "gspo_token", "sapo", "cispo", "topr", "dcpo", "bapo"]


def _inputs(logp, old, adv, mask=None, **kw):
    """Rows of per-token lists (or one flat list = one sequence) as LossInputs."""
    t = lambda x: torch.tensor(x if isinstance(x[0], list) else [x], dtype=torch.float32)  # noqa: E731
    logp = t(logp).requires_grad_(True)
    mask = torch.ones_like(logp) if mask is None else t(mask)
    return LossInputs(logp, t(old), t(adv), mask, **kw)


def _grad(name, inp, **kw):
    POLICY_LOSSES[name](inp, **kw).loss.sum().backward()
    return inp.logprobs.grad


def _close(x, expected, atol=1e-5):
    return torch.allclose(x.detach(), torch.tensor(expected, dtype=torch.float32).reshape(x.shape), atol=atol)


# --------------------------------------------------------------------------------------- dual_clip
def test_dual_clip_caps_negative_advantage_loss_at_c():
    # ratios e^1.5 = 4.4817, e^0.5 = 1.6487, e^1.5, e^-0.5 = 0.6065 (old log-probs 0)
    inp = _inputs([1.5, 0.5, 1.5, -0.5], [0.0] * 4, [-1.0, -1.0, 1.0, -1.0])
    out = POLICY_LOSSES["dual_clip"](inp, clip_c=3.0)
    expected = [3.0,        # A<0, r=4.48: PPO gives r|A| = 4.48 > c|A| = 3 -> 3
                e(0.5),     # A<0, r=1.65 < c: PPO's unclipped r|A| = 1.6487 stays
                -1.2,       # A>0: dual clip does not apply, PPO clips at 1 + 0.2
                0.8]        # A<0, r=0.61: PPO's clipped (1 - 0.2)|A|
    assert _close(out.loss, expected)
    assert math.isclose(float(out.metrics["dual_clip_frac"]), 0.25)
    out.loss.sum().backward()
    assert inp.logprobs.grad[0, 0] == 0 and inp.logprobs.grad[0, 1] != 0  # the capped token is constant


def test_dual_clip_equals_ppo_clip_for_ratios_below_c():
    g = torch.Generator().manual_seed(0)
    logp, adv = torch.rand(4, 6, generator=g) * 2 - 1, torch.randn(4, 6, generator=g)  # r in [e^-1, e^1] < 3
    outs, grads = [], []
    for name in ("dual_clip", "ppo_clip"):
        x = logp.clone().requires_grad_(True)
        out = POLICY_LOSSES[name](LossInputs(x, torch.zeros(4, 6), adv, torch.ones(4, 6)))
        out.loss.sum().backward()
        outs.append(out.loss.detach())
        grads.append(x.grad)
    assert torch.allclose(outs[0], outs[1], atol=1e-6) and torch.allclose(grads[0], grads[1], atol=1e-6)


def test_dual_clip_rejects_c_not_above_one():
    with pytest.raises(ValueError, match="clip_c must be > 1"):
        POLICY_LOSSES["dual_clip"](_inputs([0.0], [0.0], [1.0]), clip_c=1.0)


# -------------------------------------------------------------------------------- gspo, gspo_token
def test_gspo_uses_the_mean_log_ratio_of_the_sequence():
    # token log-ratios 0.3 and -0.1 -> mean 0.1 -> s = e^0.1 = 1.10517; A = 2
    inp = _inputs([0.3, -0.1], [0.0, 0.0], [2.0, 2.0])
    wide = POLICY_LOSSES["gspo"](inp, clip_low=0.2, clip_high=0.2)
    assert _close(wide.loss, [-2 * e(0.1)] * 2)  # unclipped: -s A = -2.21034 on both tokens
    # paper defaults: 1.10517 > 1 + 4e-4 with A > 0 -> -(1.0004) * 2 = -2.0008, and no gradient
    out = POLICY_LOSSES["gspo"](inp)
    assert _close(out.loss, [-2.0008] * 2)
    out.loss.sum().backward()
    assert inp.logprobs.grad.abs().sum() == 0 and float(out.metrics["clip_frac"]) == 1.0


def test_gspo_ratio_is_the_geometric_mean_of_token_ratios_over_the_mask():
    g = torch.Generator().manual_seed(1)
    logp, old = torch.randn(3, 5, generator=g) * 0.3, torch.randn(3, 5, generator=g) * 0.3
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)
    out = POLICY_LOSSES["gspo"](LossInputs(logp, old, torch.ones(3, 5), mask), clip_low=10.0, clip_high=10.0)
    for i, n in enumerate([5, 2, 1]):
        geo = torch.prod(torch.exp(logp[i, :n] - old[i, :n])) ** (1.0 / n)
        assert torch.allclose(-out.loss[i, :n], geo.expand(n), atol=1e-5)  # loss = -s A with A = 1
        assert out.loss[i, n:].abs().sum() == 0


def test_gspo_token_has_gspo_value_and_a_per_token_gradient():
    g = torch.Generator().manual_seed(2)
    logp, old = torch.randn(2, 4, generator=g) * 0.2, torch.randn(2, 4, generator=g) * 0.2
    adv = torch.tensor([[1.0, 2.0, -1.0, 0.5], [-1.0, -1.0, -1.0, -1.0]])  # per-token A in row 0
    kw = dict(clip_low=10.0, clip_high=10.0)
    res = {}
    for name in ("gspo", "gspo_token"):
        x = logp.clone().requires_grad_(True)
        out = POLICY_LOSSES[name](LossInputs(x, old, adv, torch.ones(2, 4)), **kw)
        out.loss.sum().backward()
        res[name] = (out.loss.detach(), x.grad)
    assert torch.allclose(res["gspo"][0], res["gspo_token"][0])  # same value, s_{i,t} = s_i
    s = torch.exp((logp - old).mean(-1, keepdim=True))
    assert torch.allclose(res["gspo_token"][1], -adv * s, atol=1e-5)  # token t: -A_t s_i
    # gspo spreads d s_i / d log pi_t = s_i / |y_i| over all tokens: -s_i mean_t(A_t), shared
    assert torch.allclose(res["gspo"][1], (-s * adv.mean(-1, keepdim=True)).expand(2, 4), atol=1e-5)
    assert torch.allclose(res["gspo"][1][1], res["gspo_token"][1][1], atol=1e-6)  # equal A: equal grads


# -------------------------------------------------------------------------------------------- sapo
def test_sapo_soft_gate_values():
    # f(r) = (4/tau) sigmoid(tau (r - 1)); old log-probs 0
    inp = _inputs([0.0, 0.5, 0.5, 0.0], [0.0] * 4, [1.0, 1.0, -1.0, -1.0])
    out = POLICY_LOSSES["sapo"](inp)
    expected = [-2.0,                # r=1, tau_pos=1: f = 4 * 0.5 = 2 -> -f A = -2
                -2.626889,           # r=e^0.5=1.6487: sigmoid(0.6487) = 0.656722, f = 2.626889
                2.529512,            # A<0, tau_neg=1.05: sigmoid(0.681152) = 0.663997, f = 4/1.05 * it
                2.0 / 1.05]          # r=1, A<0: f = (4/1.05) * 0.5 = 1.904762
    assert _close(out.loss, expected)


def test_sapo_gradient_weight_is_4_sigma_1_minus_sigma_times_r():
    # r = e^0.5, tau = 1: sigmoid = 0.656722 -> 4 * 0.656722 * 0.343278 * 1.648721 = 1.486739
    grad = _grad("sapo", _inputs([0.5, 0.0, 0.0], [0.0] * 3, [1.0, 1.0, -2.0]))
    assert _close(grad, [-1.486739, -1.0, 2.0])  # at r = 1 the weight is 1: -A, REINFORCE's


def test_sapo_damps_negative_tokens_faster():
    grad = _grad("sapo", _inputs([1.0, 1.0], [0.0, 0.0], [1.0, -1.0]))  # r = e^1, |A| = 1
    assert abs(float(grad[0, 1])) < abs(float(grad[0, 0]))  # tau_neg = 1.05 > tau_pos = 1


# ------------------------------------------------------------------------------------------- cispo
def test_cispo_hand_computed_loss_and_gradient():
    # token 0: r = e^(-0.5+1) = 1.6487 -> weight 1 + 0.2 = 1.2; A = 1; log pi = -0.5
    # token 1: r = e^(-1.5+1) = 0.6065 -> no lower bound, weight 0.6065; A = -1; log pi = -1.5
    inp = _inputs([-0.5, -1.5], [-1.0, -1.0], [1.0, -1.0])
    out = POLICY_LOSSES["cispo"](inp)
    assert _close(out.loss, [-1.2 * 1 * -0.5, -e(-0.5) * -1 * -1.5])  # 0.6, -0.909796
    out.loss.sum().backward()
    assert _close(inp.logprobs.grad, [-1.2, e(-0.5)])  # -w A: a clipped token keeps its gradient
    grad_low = _grad("cispo", _inputs([-0.5, -1.5], [-1.0, -1.0], [1.0, -1.0]), clip_low=0.2)
    assert _close(grad_low, [-1.2, 0.8])  # with a lower bound 1 - 0.2


def test_cispo_gradient_is_minus_clipped_ratio_times_advantage():
    g = torch.Generator().manual_seed(3)
    logp, adv = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    x = logp.clone().requires_grad_(True)
    POLICY_LOSSES["cispo"](LossInputs(x, torch.zeros(3, 7), adv, torch.ones(3, 7))).loss.sum().backward()
    assert torch.allclose(x.grad, -torch.exp(logp).clamp(max=1.2) * adv, atol=1e-6)


# -------------------------------------------------------------------------------------------- topr
def _topr_inputs(rewards=(1.0, -1.0, -1.0), behavior=True):
    logp = [[-1.0, -1.0], [-1.0, -0.5], [-0.5, -0.5]]
    mu = [[-0.2, -0.3], [-0.6, -0.2], [-1.0, -0.5]]
    adv = [[1.0, 1.0], [-1.0, -1.0], [-1.0, -1.0]]
    kw = {"rewards": None if rewards is None else torch.tensor(rewards)}
    if behavior:  # old = logp, so only mu can produce the weights below
        return _inputs(logp, logp, adv, behavior_logprobs=torch.tensor(mu), **kw)
    return _inputs(logp, mu, adv, **kw)


@pytest.mark.parametrize("behavior", [True, False])
def test_topr_weights_positives_1_and_tapers_negatives(behavior):
    inp = _topr_inputs(behavior=behavior)
    out = POLICY_LOSSES["topr"](inp)
    w1 = e(-0.7)  # seq 1: sum(log pi - log mu) = -0.4 - 0.3 = -0.7 -> pi/mu = 0.496585 < 1
    expected = [[1.0, 1.0],                      # seq 0, R > 0: w = 1 although pi/mu = e^-1.5; -1*1*(-1)
                [-w1 * 1.0, -w1 * 0.5],          # -w A log pi = -0.4966 * (-1) * (-1), ... * (-0.5)
                [-0.5, -0.5]]                    # seq 2: pi/mu = e^0.5 clipped to 1; -1*(-1)*(-0.5)
    assert _close(out.loss, expected)
    out.loss.sum().backward()
    assert _close(inp.logprobs.grad, [[-1.0, -1.0], [w1, w1], [1.0, 1.0]])  # -w A
    assert math.isclose(float(out.metrics["neg_weight_mean"]), (w1 + 1) / 2, rel_tol=1e-5)


def test_topr_needs_rewards_unless_split_on_advantage():
    with pytest.raises(ValueError, match="inputs.rewards"):
        POLICY_LOSSES["topr"](_topr_inputs(rewards=None))
    by_adv = POLICY_LOSSES["topr"](_topr_inputs(rewards=None), split="advantage")
    assert torch.allclose(by_adv.loss, POLICY_LOSSES["topr"](_topr_inputs()).loss)  # same signs here


def test_topr_threshold_moves_samples_to_the_negative_side():
    # {0, 1} rewards with threshold 0.5: the 0-reward sequences are negatives and get tapered
    base = POLICY_LOSSES["topr"](_topr_inputs(rewards=(1.0, 0.0, 0.0)), threshold=0.5).loss
    assert torch.allclose(base, POLICY_LOSSES["topr"](_topr_inputs()).loss)
    untapered = POLICY_LOSSES["topr"](_topr_inputs(rewards=(1.0, 0.0, 0.0))).loss  # threshold 0: all positive
    assert _close(untapered[1], [-1.0, -0.5])


# -------------------------------------------------------------------------------------------- dcpo
def test_dcpo_bounds_match_the_papers_table():
    # eps_low 0.16, eps_high 0.2 (the paper's table). q = 0.9:
    #   high = 0.5 + 0.5 sqrt(1 + 0.8/0.9) = 1.187184 (p <= 1.0685); low = 0.5 + 0.5 sqrt(1 - 0.64/0.9) = 0.768742
    # q = 0.01: high = 0.5 + 0.5 sqrt(1 + 80) = 5.0 (p <= 0.05); 1 - 64 < 0 -> low = 0.5 (p >= 0.005)
    old = [ln(0.9), ln(0.9), ln(0.01), ln(0.01)]
    logp = [o + ln(r) for o, r in zip(old, [2.0, 0.5, 8.0, 0.3])]
    out = POLICY_LOSSES["dcpo"](_inputs(logp, old, [1.0, -1.0, 1.0, -1.0]), clip_low=0.16, clip_high=0.2)
    assert _close(out.loss, [-1.187184, 0.768742, -5.0, 0.5])  # A>0: -high A; A<0: |A| max(r, low)


def test_dcpo_caps_the_upper_bound_and_dual_clips_negatives():
    # q = 0.001, defaults: 0.5 + 0.5 sqrt(1 + 1.12/0.001) = 17.24 -> capped at max_ratio 10
    # q = 0.9, A<0, r = e^3 = 20.09: unclipped r|A| = 20.09 -> dual clip at c|A| = 10
    old = [ln(0.001), ln(0.9)]
    out = POLICY_LOSSES["dcpo"](_inputs([old[0] + ln(12.0), old[1] + 3.0], old, [1.0, -1.0]))
    assert _close(out.loss, [-10.0, 10.0], atol=1e-4)


def test_dcpo_survives_zero_old_probability():
    inp = _inputs([-3.0, 0.0], [-1e4, -math.inf], [1.0, -1.0])  # q underflows to 0
    out = POLICY_LOSSES["dcpo"](inp)
    out.loss.sum().backward()
    assert torch.isfinite(out.loss).all() and torch.isfinite(inp.logprobs.grad).all()


# -------------------------------------------------------------------------------------------- bapo
def test_bapo_keeps_start_bounds_when_positives_already_hold_their_share():
    # start [0.6, 1.2]: positive min(2, 1.2) * 1 = 1.2, negative max(1, 0.6) * 1 = 1 -> share 0.545 >= 0.5
    out = POLICY_LOSSES["bapo"](_inputs([ln(2.0), 0.0], [0.0, 0.0], [1.0, -1.0]))
    assert _close(out.metrics["clip_low"], 0.6) and _close(out.metrics["clip_high"], 1.2)
    assert _close(out.loss, [-1.2, 1.0])


def test_bapo_widens_bounds_until_positive_share_reaches_rho0():
    # positive A = 1, r = 3; negative A = -1.87, r = 1 -> at start 1.2 vs 1.87 (share 0.39 < 0.5).
    # c_low rises to 0.9 first (negative contribution stays max(1, c_low) * 1.87 = 1.87), then
    # c_high climbs in 0.05 steps: 1.85 < 1.87, 1.9 >= 1.87 -> stop at [0.9, 1.9], share 1.9/3.77
    out = POLICY_LOSSES["bapo"](_inputs([ln(3.0), 0.0], [0.0, 0.0], [1.0, -1.87]))
    assert _close(out.metrics["clip_low"], 0.9) and _close(out.metrics["clip_high"], 1.9)
    assert _close(out.metrics["pos_share"], 1.9 / 3.77)
    assert _close(out.loss, [-1.9, 1.87])  # the positive token is clipped at the new c_high


def test_bapo_uses_widest_bounds_when_target_is_unreachable_and_start_bounds_without_signal():
    out = POLICY_LOSSES["bapo"](_inputs([ln(5.0), 0.0], [0.0, 0.0], [1.0, -10.0]))  # 3 vs 10 at best
    assert _close(out.metrics["clip_low"], 0.9) and _close(out.metrics["clip_high"], 3.0)
    flat = POLICY_LOSSES["bapo"](_inputs([0.3, -0.3], [0.0, 0.0], [0.0, 0.0]))
    assert _close(flat.metrics["clip_low"], 0.6) and _close(flat.metrics["clip_high"], 1.2)


def test_bapo_search_ignores_masked_tokens():
    # the same two tokens as the widening test plus a masked one with a huge ratio and advantage
    inp = _inputs([ln(3.0), 0.0, 50.0], [0.0, 0.0, 0.0], [1.0, -1.87, 100.0], mask=[1.0, 1.0, 0.0])
    out = POLICY_LOSSES["bapo"](inp)
    assert _close(out.metrics["clip_high"], 1.9) and out.loss[0, 2] == 0


# ------------------------------------------------------------------------------- shared invariants
@pytest.mark.parametrize("name", RATIO_LOSSES)
def test_on_policy_gradient_is_reinforce(name):
    # at ratio 1 (log pi == log pi_old == log mu) every loss's gradient is -A, as REINFORCE's
    g = torch.Generator().manual_seed(4)
    logp = -torch.rand(3, 5, generator=g) * 3
    adv = torch.randn(3, 1, generator=g).expand(3, 5).contiguous()  # one advantage per sequence
    x = logp.clone().requires_grad_(True)
    inp = LossInputs(x, logp.clone(), adv, torch.ones(3, 5), behavior_logprobs=logp.clone(), rewards=adv[:, 0])
    # (gspo: each of the 5 tokens gets -A s / 5 from each of the 5 equal token losses: -A in all)
    POLICY_LOSSES[name](inp).loss.sum().backward()
    assert torch.allclose(x.grad, -adv, atol=1e-6)


@pytest.mark.parametrize("name", RATIO_LOSSES)
def test_masked_tokens_have_zero_loss_and_gradient_even_with_garbage(name):
    logp = torch.tensor([[-0.5, -1.0, math.nan], [-2.0, 1e4, -math.inf]], requires_grad=True)
    old = torch.tensor([[-0.7, -0.8, 3.0], [-1.5, -math.inf, math.nan]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([[1.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    inp = LossInputs(logp, old, adv, mask, behavior_logprobs=old.clone(), rewards=torch.tensor([1.0, -1.0]))
    out = POLICY_LOSSES[name](inp)
    out.loss.sum().backward()
    assert torch.isfinite(out.loss).all() and torch.isfinite(logp.grad).all()
    assert (out.loss[mask == 0] == 0).all() and (logp.grad[mask == 0] == 0).all()
    assert (logp.grad[mask == 1] != 0).any()
    assert all(torch.isfinite(v).all() for v in out.metrics.values())


def test_registry_entries_carry_paper_ids_and_paper_defaults():
    ids = {"dual_clip": "1912.09729", "gspo": "2507.18071", "gspo_token": "2507.18071", "sapo": "2511.20347",
           "cispo": "2506.13585", "topr": "2503.14286", "dcpo": "2509.02333", "bapo": "2510.18927"}
    for name, arxiv in ids.items():
        entry = POLICY_LOSSES.get(name)
        assert entry.arxiv == arxiv and entry.formula, name
    assert POLICY_LOSSES.get("gspo").defaults == {"clip_low": 3e-4, "clip_high": 4e-4}
    assert POLICY_LOSSES.get("sapo").defaults == {"tau_pos": 1.0, "tau_neg": 1.05}
    assert POLICY_LOSSES.get("dual_clip").defaults["clip_c"] == 3.0
