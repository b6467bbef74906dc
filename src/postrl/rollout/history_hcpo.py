"""HCPO's history policies on chat messages: which part of an episode's past the policy sees at each turn.

A multi-turn episode is a message list

    prompt          the messages before the first action (system prompt, task = first observation s_0)
    step j          [assistant a_j] + [observation messages s_{j+1}]   (tool results or user text)

so before action t the transcript is prompt, a_0, s_1, ..., a_{t-1}, s_t; s_t is the *current*
observation and the pairs (s_j, a_j), j < t, are the history H_t (HiconAgent's notation). A
history policy maps that transcript to a `HistoryContext`: the messages rendered as the turn's
prompt, optionally a second (`alt`) context for the same action, and a few numbers for the batch
metadata. `hcpo_context` is HCPO's policy; the rollout's history hook (`env.history: hcpo`) calls
it with a `random.Random` seeded per (episode, turn) and the training progress in [0, 1].

Text envs put the instruction and s_0 in one user message, so the prompt is always kept whole
(HiconAgent keeps the instruction and drops old screenshots; here the first observation cannot
be separated from the instruction).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

OBS_PLACEHOLDER = "[observation omitted]"


@dataclass
class HistoryContext:
    messages: list[dict]  # the context the action is sampled from (the row's prompt)
    alt_messages: list[dict] | None = None  # a second context for the same action (HCPO's compressed branch)
    info: dict = field(default_factory=dict)  # per-row metadata, e.g. {"history_len": 2, "history_max": 3}


def split_transcript(messages: list[dict]) -> tuple[list[dict], list[tuple[dict, list[dict]]]]:
    """(prompt, steps): the messages before the first assistant message, then one
    (action message, observation messages) pair per assistant message."""
    first = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
    prompt, steps = list(messages[:first]), []
    for m in messages[first:]:
        if m.get("role") == "assistant":
            steps.append((m, []))
        else:
            steps[-1][1].append(m)
    if steps and not steps[-1][1]:
        raise ValueError("history policies build the context of the NEXT action: the transcript must end with "
                         "an observation (the env's reply to the last action), not an assistant message")
    return prompt, steps


def history_context(messages: list[dict], keep: int | None = None, *, compress: bool = False,
                    placeholder: str = OBS_PLACEHOLDER) -> list[dict]:
    """The context of the next action with the last `keep` history pairs (None: all of them).

    Keeping tau pairs of t (tau < t) keeps s_{t-tau}, a_{t-tau}, ..., a_{t-1}, s_t after the prompt and
    drops a_0..a_{t-tau-1} and s_1..s_{t-tau-1}. `compress` (HiconAgent's anchor-guided compression)
    then replaces the content of every kept *history* observation s_j (0 < j < t) by `placeholder`
    and keeps the actions (the anchors) and the current observation s_t verbatim.
    """
    prompt, steps = split_transcript(messages)
    t = len(steps)
    tau = t if keep is None else max(0, min(int(keep), t))
    out = list(prompt)
    if tau < t and t > 0:  # s_{t-tau}: the observation before the first kept action (or s_t when tau = 0)
        out += _observation(steps[t - tau - 1][1], compress and tau > 0, placeholder)
    for j in range(t - tau, t):
        action, obs = steps[j]
        current = j == t - 1
        out.append(dict(action))
        out += _observation(obs, compress and not current, placeholder)
    return out


def _observation(obs: list[dict], drop: bool, placeholder: str) -> list[dict]:
    if not drop:
        return [dict(m) for m in obs]
    return [{**m, "content": placeholder} for m in obs]


def dcs_probs(max_hist: int, lam: float) -> list[float]:
    """HiconAgent's exponential-biased history-length distribution over tau in {0, ..., max_hist}:

        P(tau | u) = exp(lam(u) tau) / sum_{j=0}^{N} exp(lam(u) j)

    lam = 0 is uniform; lam > 0 favours longer histories."""
    if max_hist < 0:
        raise ValueError(f"max_hist must be >= 0, got {max_hist}")
    top = lam * max_hist if lam > 0 else 0.0  # subtract the largest exponent: no overflow
    w = [math.exp(lam * i - top) for i in range(max_hist + 1)]
    s = sum(w)
    return [x / s for x in w]


def dcs_lambda(progress: float, *, steepness: float = 2.0, ramp: float = 1 / 3) -> float:
    """lam(u) = steepness * min(1, progress / ramp): uniform at the start, full steepness after
    `ramp` of training (HiconAgent code: w = min(1, 3 (u-1) / (U-1)), steepness 2)."""
    if ramp <= 0:
        return steepness
    return steepness * min(1.0, max(0.0, progress) / ramp)


def sample_history_length(rng: random.Random, max_hist: int, lam: float) -> int:
    """One draw of tau from `dcs_probs(max_hist, lam)` (inverse CDF on one uniform)."""
    r, acc = rng.random(), 0.0
    probs = dcs_probs(max_hist, lam)
    for i, p in enumerate(probs):
        acc += p
        if r < acc:
            return i
    return max_hist  # float round-off


def hcpo_context(messages: list[dict], *, rng: random.Random, progress: float = 0.0, steepness: float = 2.0,
                 ramp: float = 1 / 3, max_history: int | None = None, compress: bool = True,
                 placeholder: str = OBS_PLACEHOLDER) -> HistoryContext:
    """HCPO's rollout side (HiconAgent 2512.01763, Sec. 4) for the next action of `messages`.

    Dynamic Context Sampling: draw tau in {0..N} (N = past turns, capped by `max_history`) with
    P(tau|u) = exp(lam(u) tau) / sum_j exp(lam(u) j), lam(u) = steepness * min(1, u / ramp) for
    training progress u (code defaults: steepness 2, ramp 1/3; the paper says only that lam(u)
    increases linearly). The action is sampled from the context with tau pairs.
    Anchor-guided History Compression (`compress`): `alt_messages` is the same context with its
    history observations replaced by `placeholder` (actions kept as anchors), the compressed branch
    the `hcpo` loss aligns with the full one. HiconAgent drops the screenshot tokens after an early
    fusion layer inside the model; a text env has no such split, so they are dropped at the input.
    `rng` is seeded by the rollout per (episode, turn), so a draw is reproducible.
    """
    if steepness < 0 or ramp < 0:
        raise ValueError(f"history hcpo: steepness and ramp must be >= 0, got {steepness}, {ramp}")
    t = len(split_transcript(messages)[1])
    n = t if max_history is None else max(0, min(t, max_history))
    tau = sample_history_length(rng, n, dcs_lambda(progress, steepness=steepness, ramp=ramp))
    ctx = history_context(messages, tau)
    alt = history_context(messages, tau, compress=True, placeholder=placeholder) if compress else None
    return HistoryContext(ctx, alt, info={"history_len": tau, "history_max": t})


def alt_prompt_batch(batch):
    """`batch` with each row's prompt replaced by `metadata["alt_prompt_ids"]` (same completions,
    masks and per-token fields): the second forward of losses that need "alt_context"."""
    from dataclasses import replace

    from postrl.rollout.batch import pad_rows

    alt = batch.metadata.get("alt_prompt_ids")
    if alt is None or len(alt) != batch.size:
        raise ValueError("this loss needs 'alt_context': every row must carry metadata['alt_prompt_ids'] (the "
                         "token ids of its second prompt); set env.layout: per_turn and env.history: hcpo")
    ids, mask = pad_rows([list(a) for a in alt], 0, left=True)  # pad id 0: masked out
    return replace(batch, prompt_ids=ids.to(batch.device), prompt_mask=mask.to(batch.device))


# ------------------------------------------------------------------ token-level policy (per_turn rollout)
from postrl.rollout.history import HISTORIES, HistoryInput  # noqa: E402  (the history-policy registry; after the pure helpers)


class ContextIds(list):
    """The next turn's prompt ids (a plain `list[int]` to the rollout) that also carry HCPO's
    compressed branch (`alt_ids`, for `metadata["alt_prompt_ids"]`) and per-row `info`."""

    def __init__(self, ids, alt_ids=None, info=None):
        super().__init__(ids)
        self.alt_ids, self.info = alt_ids, dict(info or {})


@HISTORIES.register("hcpo", paper="HiconAgent: History Context-aware Policy Optimization for GUI Agents",
                    arxiv="2512.01763", needs=("alt_context",),
                    summary="dynamic context sampling (tau ~ exp(lam(u) tau)) + an observation-dropped compressed "
                            "branch for the hcpo loss")
def hcpo_history(h: HistoryInput, *, steepness: float = 2.0, ramp: float = 1 / 3, max_history: int | None = None,
                 compress: bool = True, placeholder: str = OBS_PLACEHOLDER, role: str = "tool") -> list[int]:
    """HCPO's context on the exact tokens of earlier turns (HiconAgent Sec. 4.1-4.2).

        tau ~ P(tau | u) = exp(lam(u) tau) / sum_j exp(lam(u) j),  tau in {1..t}, lam(u) = steepness * min(1, u / ramp)
        context     = prompt + a_{t-tau} o_{t-tau} + ... + a_{t-1} o_{t-1}
        compressed  = prompt + a_{t-tau} [placeholder] + ... + a_{t-2} [placeholder] + a_{t-1} o_{t-1}

    Here tau counts kept turns (action + the observation after it): the current observation
    o_{t-1} comes with the action before it in the token layout, so tau >= 1 (HiconAgent's tau = 0,
    the current screen without any past action, has no suffix-valid token form). The first turn
    (t = 0) is the prompt alone. `u` is `h.progress` (0 when the rollout does not pass it).
    The compressed context rides on the returned ids as `.alt_ids` (see `ContextIds`).
    """
    t = len(h.turns)
    out, alt = list(h.prompt_ids), list(h.prompt_ids)
    tau = 0
    if t:
        n = t if max_history is None else max(1, min(t, max_history))
        lam = dcs_lambda(float(getattr(h, "progress", 0.0)), steepness=steepness, ramp=ramp)
        tau = 1 + sample_history_length(h.rng, n - 1, lam)  # {1..n}, the same exp(lam tau) shape
        kept = h.turns[t - tau:]
        for i, turn in enumerate(kept):
            out += turn.action_ids + turn.observation_ids
            obs = turn.observation_ids
            if compress and i < len(kept) - 1:
                ended = h.renderer.tokenizer.decode(turn.action_ids[-1:]) if turn.action_ids else None
                obs = h.renderer.observation_ids(role, placeholder, action_ended_with=ended)
            alt += turn.action_ids + obs
    return ContextIds(out, alt if compress else None, {"history_len": tau, "history_max": t})
