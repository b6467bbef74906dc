"""The hf engine samples the distribution HF `generate` samples: temperature, top-k, top-p.

For each setting, N completions of two tokens from one prompt, from our engine and from
`model.generate(do_sample=True)`, go through chi-square tests:

- ours against the exact probabilities, for the first token and the (first, second) pair. The
  exact reference applies HF's own logits warpers (`TemperatureLogitsWarper`, `TopKLogitsWarper`,
  `TopPLogitsWarper`) to the model's logits, independently of `postrl.rollout.sampling`; a pair's
  probability is P(t1) * P(t2 | t1) from a second forward over every t1 in the support;
- (slow) ours against HF `generate` (two-sample homogeneity) on the first token and the pair, and
  HF's own samples against the exact probabilities (a check of the reference itself).

Cells with an expected count below 5 (two-sample: a pooled count below 10) are merged into one
cell so the chi-square approximation holds. Each test fails with probability ALPHA = 1e-4 when the
distributions are equal (p-value from the regularised upper incomplete gamma function,
`torch.special.gammaincc`): at most 2e-3 over the 20 statistical tests for a random seed. The seeds
are fixed, so the outcome is deterministic. `test_the_tests_can_fail` shows the power: a 10% error
in the temperature is rejected at the same ALPHA.

The tiny random model's logits are nearly flat (std ~0.1), so the settings use temperatures of
0.1-0.2 to get a spread-out but uneven distribution on which the filters bite.
"""

from collections import Counter

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from postrl.learner.tiny import build_model, build_tokenizer
from postrl.rollout.engines import SamplingParams
from postrl.rollout.hf_engine import HFEngine
from postrl.rollout.sampling import inverse_cdf, sample_tokens

N = 4000
ALPHA = 1e-4
SETTINGS = {  # name: (temperature, top_k, top_p)
    "temperature": (0.15, 0, 1.0),
    "top_k": (0.1, 6, 1.0),
    "top_p": (0.12, 0, 0.7),
    "top_k_then_top_p": (0.2, 10, 0.8),
}


@pytest.fixture(scope="module")
def setup():
    tok = build_tokenizer()
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                        init_seed=3).eval()
    prompt = tok("12+34=", add_special_tokens=False)["input_ids"]
    return tok, model, prompt


@pytest.fixture(scope="module")
def ours(setup):
    """name -> our engine's (first, second) token pairs, sampled once per setting."""
    tok, model, prompt = setup
    engine = HFEngine(model, tok, micro_batch_size=N)  # one chunk: fewer, larger ops

    def sample(name):
        temperature, top_k, top_p = SETTINGS[name]
        params = SamplingParams(n=N, temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=2)
        return pairs(engine.generate([prompt], params, seed=1).completion_ids, tok.pad_token_id)

    return Lazy(sample)


@pytest.fixture(scope="module")
def hf(setup):
    """name -> HF `generate`'s (first, second) token pairs."""
    tok, model, prompt = setup

    def sample(name):
        temperature, top_k, top_p = SETTINGS[name]
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(1)
            out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
                                 max_new_tokens=2, num_return_sequences=N, pad_token_id=tok.pad_token_id)
        return pairs(out[:, len(prompt):], tok.pad_token_id)

    return Lazy(sample)


@pytest.fixture(scope="module")
def exact(setup):
    """name -> exact probability of every (first, second) pair."""
    tok, model, prompt = setup
    return Lazy(lambda name: exact_pair_probs(model, prompt, tok, *SETTINGS[name]))


class Lazy(dict):
    """A dict that computes a missing key with `make(key)` (so each test pays only for what it uses)."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, key):
        self[key] = value = self.make(key)
        return value


def pairs(completions: torch.Tensor, pad_id: int) -> list[tuple[int, int]]:
    """(first, second) token per row; a row that ended after one token (EOS) has pad second."""
    completions = torch.nn.functional.pad(completions, (0, 2 - completions.shape[1]), value=pad_id)
    return [tuple(r) for r in completions[:, :2].tolist()]


def hf_filtered_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """softmax after HF's warpers, in HF's order (temperature, top-k, top-p): [B, V]."""
    scores = TemperatureLogitsWarper(temperature)(None, logits.float())
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.softmax(scores, dim=-1)


@torch.no_grad()
def exact_pair_probs(model, prompt, tok, temperature, top_k, top_p) -> dict[tuple[int, int], float]:
    first = hf_filtered_probs(model(torch.tensor([prompt])).logits[:, -1], temperature, top_k, top_p)[0]
    support = first.nonzero().squeeze(-1).tolist()
    rows = torch.tensor([prompt + [t] for t in support])
    second = hf_filtered_probs(model(rows).logits[:, -1], temperature, top_k, top_p)
    joint = (first[support, None] * second).tolist()  # [support, V]: P(t1) * P(t2 | t1)
    probs = {}
    for i, t1 in enumerate(support):
        if t1 == tok.eos_token_id:  # generation ends: the second position is padding
            probs[(t1, tok.pad_token_id)] = float(first[t1])
            continue
        probs.update(((t1, t2), p) for t2, p in enumerate(joint[i]) if p > 0)
    return probs


def chi2_pvalue(stat: float, df: int) -> float:
    """P(X >= stat) for X ~ chi-square(df)."""
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def goodness_of_fit(observed: Counter, probs: dict, n: int) -> float:
    """Chi-square p-value of the counts against exact probabilities; cells with n*p < 5 merged.

    A sample outside the support (a filtered token) is impossible under `probs`: p-value 0."""
    if not set(observed) <= set(probs):
        return 0.0
    big = [c for c, p in probs.items() if n * p >= 5]
    cells = [(observed[c], n * probs[c]) for c in big]
    rest_p = 1.0 - sum(probs[c] for c in big)
    if n * rest_p >= 5:
        cells.append((n - sum(o for o, _ in cells), n * rest_p))
    stat = sum((o - e) ** 2 / e for o, e in cells)
    return chi2_pvalue(stat, len(cells) - 1)


def homogeneity(a: Counter, b: Counter) -> float:
    """Two-sample chi-square p-value for equal sample sizes; cells with pooled count < 10 merged."""
    keys = set(a) | set(b)
    big = [k for k in keys if a[k] + b[k] >= 10]
    cells = [(a[k], b[k]) for k in big]
    rest = (sum(a[k] for k in keys if k not in big), sum(b[k] for k in keys if k not in big))
    if sum(rest) >= 10:
        cells.append(rest)
    stat = sum((x - y) ** 2 / (x + y) for x, y in cells)
    return chi2_pvalue(stat, len(cells) - 1)


def marginal(probs: dict) -> dict:
    out = Counter()
    for (t1, _), p in probs.items():
        out[t1] += p
    return dict(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SETTINGS))
def test_first_token_matches_hf_generate(ours, hf, name):
    assert homogeneity(Counter(p[0] for p in ours[name]), Counter(p[0] for p in hf[name])) > ALPHA


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SETTINGS))
def test_first_two_tokens_match_hf_generate(ours, hf, name):
    assert homogeneity(Counter(ours[name]), Counter(hf[name])) > ALPHA


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SETTINGS))
def test_hf_generate_matches_the_exact_probabilities(hf, exact, name):
    """The reference check: HF's samples fit the exact probabilities built from HF's warpers."""
    assert goodness_of_fit(Counter(hf[name]), exact[name], N) > ALPHA


@pytest.mark.parametrize("name", list(SETTINGS))
def test_first_token_matches_the_exact_probabilities(ours, exact, name):
    assert goodness_of_fit(Counter(p[0] for p in ours[name]), marginal(exact[name]), N) > ALPHA


@pytest.mark.parametrize("name", list(SETTINGS))
def test_first_two_tokens_match_the_exact_probabilities(ours, exact, name):
    assert goodness_of_fit(Counter(ours[name]), exact[name], N) > ALPHA


def test_the_tests_can_fail(setup, ours, exact):
    """Power: a 10% temperature error, or another filter setting, is rejected at the same ALPHA."""
    tok, model, prompt = setup
    temperature, top_k, top_p = SETTINGS["top_p"]
    off = exact_pair_probs(model, prompt, tok, temperature * 1.1, top_k, top_p)
    assert goodness_of_fit(Counter(p[0] for p in ours["top_p"]), marginal(off), N) < ALPHA
    assert goodness_of_fit(Counter(ours["top_p"]), exact["top_k_then_top_p"], N) < ALPHA


def test_inverse_cdf_never_picks_a_filtered_token():
    logits = torch.tensor([[0.0, float("-inf"), 0.0, float("-inf")]] * 5)
    u = torch.tensor([0.0, 0.49, 0.5, 0.999, torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)).item()])
    # cdf of the weights [1, 0, 1, 0] is [1, 1, 2, 2]: u * 2 < 1 picks 0, otherwise 2, never 1 or 3
    assert inverse_cdf(logits, u).tolist() == [0, 0, 2, 2, 2]


def test_top_p_keeps_the_token_that_crosses_p():
    # probs [0.5, 0.3, 0.2]: top_p = 0.6 keeps {0, 1} (0.5 < 0.6 so token 1 is needed), never token 2
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).expand(3, 3)
    u = torch.tensor([0.1, 0.7, 0.999])  # kept mass 0.8: cdf [0.5, 0.8] -> u*0.8 = 0.08, 0.56, 0.7992
    tokens, logp = sample_tokens(logits, u, top_p=0.6)
    assert tokens.tolist() == [0, 1, 1]
    assert torch.allclose(logp, torch.log(torch.tensor([0.5, 0.3, 0.3])))  # untruncated log-probs
