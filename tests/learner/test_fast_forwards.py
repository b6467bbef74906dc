"""The learner's fast forwards give the plain forward's log-probs, entropies, vocabulary means and gradients."""

import pytest
from learner.forward_cases import CASES, assert_same_as_plain, grouped_batch, tiny

from postrl.learner.packing import packed_logprobs
from postrl.learner.prefix_sharing import shared_prefix_logprobs


@pytest.mark.parametrize("fn", [shared_prefix_logprobs, packed_logprobs], ids=["prefix_sharing", "packing"])
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("case", CASES)
def test_fast_forward_matches_plain_values_and_gradients(fn, arch, case):
    seed, sizes, lens, T, min_len, temperature, with_entropy, entropy_grad, attn = case
    batch = grouped_batch(seed, sizes, lens, T=T, min_len=min_len)
    assert_same_as_plain(fn, tiny(arch, attn, seed), batch, temperature=temperature,
                         with_entropy=with_entropy, entropy_grad=entropy_grad)


@pytest.mark.parametrize("fn", [shared_prefix_logprobs, packed_logprobs], ids=["prefix_sharing", "packing"])
@pytest.mark.parametrize("case", CASES)
def test_fast_forward_matches_plain_vocab_mean_and_its_gradient(fn, case):
    seed, sizes, lens, T, min_len, temperature, with_entropy, entropy_grad, attn = case
    batch = grouped_batch(seed, sizes, lens, T=T, min_len=min_len)
    assert_same_as_plain(fn, tiny("qwen2", attn, seed), batch, temperature=temperature,
                         with_entropy=with_entropy, entropy_grad=entropy_grad, with_vocab_mean=True)
