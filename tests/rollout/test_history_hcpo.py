"""History policies: which messages are kept/dropped, the DCS distribution, the alt-prompt batch."""

import math
import random

import pytest
import torch

from postrl.rollout.history_hcpo import (OBS_PLACEHOLDER, alt_prompt_batch, dcs_lambda, dcs_probs,
                                    hcpo_context, history_context, sample_history_length, split_transcript)
from tests.helpers import make_batch


def transcript(t=3):
    """prompt (system + task s_0), then a_j and its observation s_{j+1} for j < t."""
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "task s0"}]
    for j in range(t):
        msgs += [{"role": "assistant", "content": f"a{j}"}, {"role": "tool", "content": f"s{j + 1}"}]
    return msgs


def contents(msgs):
    return [m["content"] for m in msgs]


def test_full_context_is_the_transcript():
    assert contents(history_context(transcript(3))) == ["sys", "task s0", "a0", "s1", "a1", "s2", "a2", "s3"]


@pytest.mark.parametrize("keep, expected", [
    (0, ["sys", "task s0", "s3"]),                        # no history: prompt + current observation
    (1, ["sys", "task s0", "s2", "a2", "s3"]),            # (s2, a2) + s3
    (2, ["sys", "task s0", "s1", "a1", "s2", "a2", "s3"]),
    (3, ["sys", "task s0", "a0", "s1", "a1", "s2", "a2", "s3"]),  # s0 lives in the prompt
    (9, ["sys", "task s0", "a0", "s1", "a1", "s2", "a2", "s3"]),  # capped at t
])
def test_last_tau_pairs_are_kept(keep, expected):
    assert contents(history_context(transcript(3), keep)) == expected


def test_compression_drops_history_observations_and_keeps_actions_and_the_current_one():
    P = OBS_PLACEHOLDER
    full = history_context(transcript(3), compress=True)
    assert contents(full) == ["sys", "task s0", "a0", P, "a1", P, "a2", "s3"]
    assert [m["role"] for m in full] == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant", "tool"]
    assert contents(history_context(transcript(3), 1, compress=True)) == ["sys", "task s0", P, "a2", "s3"]
    assert contents(history_context(transcript(3), 0, compress=True)) == ["sys", "task s0", "s3"]  # nothing to drop


def test_first_turn_has_no_history_and_bad_transcripts_are_rejected():
    assert contents(history_context(transcript(0), 2, compress=True)) == ["sys", "task s0"]
    with pytest.raises(ValueError, match="must end with an observation"):
        split_transcript(transcript(1)[:-1])


def test_dcs_distribution_by_hand():
    assert dcs_probs(3, 0.0) == [0.25] * 4  # uniform at the start of training
    # lam = ln 2: weights 1, 2, 4 -> 1/7, 2/7, 4/7
    assert dcs_probs(2, math.log(2)) == pytest.approx([1 / 7, 2 / 7, 4 / 7])
    # lam = 2 (HiconAgent's steepness), N = 1: e^2 / (1 + e^2) = 0.880797
    assert dcs_probs(1, 2.0)[1] == pytest.approx(0.880797, abs=1e-6)
    assert dcs_probs(0, 2.0) == [1.0]
    assert dcs_lambda(0.0) == 0.0 and dcs_lambda(1 / 6) == pytest.approx(1.0) and dcs_lambda(0.9) == 2.0


def test_sampled_lengths_follow_the_distribution():
    rng = random.Random(0)
    draws = [sample_history_length(rng, 2, math.log(2)) for _ in range(7000)]
    freq = [draws.count(i) / len(draws) for i in range(3)]
    assert freq == pytest.approx([1 / 7, 2 / 7, 4 / 7], abs=0.02)


def test_hcpo_context_gives_a_context_and_its_compressed_branch():
    ctx = hcpo_context(transcript(3), rng=random.Random(1), progress=1.0)
    tau = ctx.info["history_len"]
    assert ctx.info["history_max"] == 3 and 0 <= tau <= 3
    assert ctx.messages == history_context(transcript(3), tau)
    assert ctx.alt_messages == history_context(transcript(3), tau, compress=True)
    # the same rng seed gives the same draw (the rollout seeds it per episode and turn)
    assert hcpo_context(transcript(3), rng=random.Random(1), progress=1.0).info == ctx.info
    assert hcpo_context(transcript(3), rng=random.Random(0), max_history=1).info["history_len"] <= 1
    assert hcpo_context(transcript(2), rng=random.Random(0), compress=False).alt_messages is None
    with pytest.raises(ValueError, match="steepness"):
        hcpo_context(transcript(2), rng=random.Random(0), steepness=-1)


def test_alt_prompt_batch_swaps_only_the_prompts():
    b = make_batch([1.0, 0.0], [0, 0])
    b.metadata["alt_prompt_ids"] = [[5, 6, 7], [8]]
    alt = alt_prompt_batch(b)
    assert alt.prompt_ids.tolist() == [[5, 6, 7], [0, 0, 8]] and alt.prompt_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert torch.equal(alt.completion_ids, b.completion_ids) and torch.equal(alt.loss_mask, b.loss_mask)
    del b.metadata["alt_prompt_ids"]
    with pytest.raises(ValueError, match="alt_prompt_ids"):
        alt_prompt_batch(b)


def test_token_level_hcpo_history_keeps_tau_turns_and_compresses_their_observations():
    from postrl.learner.tiny import build_tokenizer
    from postrl.rollout.chat_turns import ChatRenderer
    from postrl.rollout.history import HISTORIES, HistoryInput, TurnRecord

    tok = build_tokenizer()
    r = ChatRenderer(tok)
    turns = [TurnRecord([], r.encode(f"a{j}<|end|>"), [], f"a{j}", f"s{j + 1}",
                        r.observation_ids("tool", f"s{j + 1}", action_ended_with="<|end|>")) for j in range(3)]
    h = HistoryInput(r.first_ids("task"), turns, random.Random(0), r)
    h.progress = 1.0
    seen = set()
    for seed in range(40):
        h.rng = random.Random(seed)
        ctx = HISTORIES["hcpo"](h)
        tau = ctx.info["history_len"]
        seen.add(tau)
        # each observation suffix ends with the generation prompt <|assistant|>
        kept = "".join(f"a{j}<|end|><|tool|>s{j + 1}<|assistant|>" for j in range(3 - tau, 3))
        assert tok.decode(ctx) == "<|user|>task<|assistant|>" + kept
        comp = "".join(f"a{j}<|end|><|tool|>{OBS_PLACEHOLDER if j < 2 else 's3'}<|assistant|>"
                       for j in range(3 - tau, 3))
        assert tok.decode(ctx.alt_ids) == "<|user|>task<|assistant|>" + comp
    assert seen == {1, 2, 3}
    first = HISTORIES["hcpo"](HistoryInput(r.first_ids("task"), [], random.Random(0), r))
    assert list(first) == list(first.alt_ids) == r.first_ids("task") and first.info["history_len"] == 0
