"""DRM dimension rewards: confidence, relevance and coherence of the reasoning, without answer labels.

DRM ("From <Answer> to <Think>: Multidimensional Supervision of Reasoning Process for LLM
Optimization", Wang et al., arXiv 2510.11457) scores a completion's reasoning R and answer A,
given the question Q (and supporting context D), on three dimensions and rewards their
combination, with no ground-truth answer:
  Confidence  the policy's own certainty: mean log-prob of R's tokens + summed log-prob of A's
              (the paper's formula; computed here from the sampled tokens' behaviour log-probs);
  Relevance   R's semantic alignment with Q (and D) and with A: the paper uses NLI and
              relevance models; here a TF-IDF cosine proxy or a `postrl rm` model (`scorer`);
  Coherence   R's logical consistency and quality: the paper uses a trained outcome reward
              model; here a checkable proxy (arithmetic steps that hold, the answer following
              from the last step) or a `postrl rm` model (`scorer`).
Relevance and coherence are per-sequence text scores, so they are `REWARDS` (`drm_relevance`,
`drm_coherence`); confidence needs the batch's log-probs, so it and the weighted combination
`drm` are `PROCESS_REWARDS` entries that put the sequence's score on its last policy token.
The proxies are NOT the paper's trained dimension models: they are offline stand-ins that
measure the same property crudely (docs/code_rewards.md says how).

Reasoning and answer are split by `split_reasoning`: the last <answer>...</answer>, else the
last \\boxed{...}, else the last non-blank line is A; R is the text before A.
"""

from __future__ import annotations

import ast
import math
import re
from collections import Counter
from fractions import Fraction
from typing import Any, Literal

import torch

from postrl.rewards.builtin import _evaluate as evaluate_arithmetic
from postrl.rewards.builtin import completion_text
from postrl.rewards.process import PROCESS_REWARDS, ProcessContext, ProcessRewards, completion_token_lists
from postrl.rewards.registry import REWARDS

PAPER = "From <Answer> to <Think>: Multidimensional Supervision of Reasoning Process for LLM Optimization (DRM)"
ARXIV = "2510.11457"
Normalize = Literal["none", "group", "batch"]

_ANSWER_TAG = re.compile(r"(?s)<answer>(.*?)</answer>")
_BOXED = re.compile(r"\\boxed\{")
_WORD = re.compile(r"\w+")
# "lhs = number" on one line, where lhs is an arithmetic expression with at least one operator.
_EQUATION = re.compile(r"((?:[\d.() \t]+[-+*/])+[\d.() \t]+)=[ \t]*(-?\d+(?:\.\d+)?)")


# --------------------------------------------------------------------------- reasoning / answer
def split_reasoning(text: str) -> tuple[int, int, int]:
    """(end of R, start of A, end of A) as character offsets into `text`.

    A is the inside of the last <answer>...</answer>, else of the last \\boxed{...} (braces
    balanced), else the last non-blank line (stripped). R is the text before the <answer> tag,
    before the line holding the box, or before the last line. R may be empty; an empty text gives
    (0, 0, 0).
    """
    tags = list(_ANSWER_TAG.finditer(text))
    if tags:
        return tags[-1].start(), tags[-1].start(1), tags[-1].end(1)
    boxes = list(_BOXED.finditer(text))
    if boxes:
        start = boxes[-1].end()
        depth, end = 1, start
        while end < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        line_start = text.rfind("\n", 0, boxes[-1].start()) + 1
        return line_start, start, end - 1 if depth == 0 else end
    stripped = text.rstrip()
    if not stripped.strip():
        return 0, 0, 0
    line_start = stripped.rfind("\n") + 1
    last = stripped[line_start:]
    return line_start, line_start + len(last) - len(last.lstrip()), len(stripped)


def _parts(text: str) -> tuple[str, str]:
    r_end, a_start, a_end = split_reasoning(text)
    return text[:r_end], text[a_start:a_end]


def _prompt_text(prompt: Any) -> str:
    """The question: a string prompt, or the last user message of a conversation."""
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"] or list(prompt)
    return completion_text(users[-1]) if users else ""


# ----------------------------------------------------------------------------------- confidence
def confidence_scores(ctx: ProcessContext) -> list[float | None]:
    """score_Conf = (1/|R|) sum_{t in R} log p(t) + sum_{t in A} log p(t) per sequence.

    A token is in A if its decoded text overlaps A's characters, in R if it ends before R ends;
    tokens after A (a closing tag, EOS) and non-policy tokens (loss_mask 0) are in neither. An
    empty R contributes 0 to the mean term. None for a completion with no tokens.
    """
    out: list[float | None] = []
    logp, loss_mask = ctx.batch.behavior_logprobs.float(), ctx.batch.loss_mask
    for i, ids in enumerate(completion_token_lists(ctx.batch)):
        if not ids:
            out.append(None)
            continue
        pieces = [ctx.tokenizer.decode([t], skip_special_tokens=True) for t in ids]
        r_end, a_start, a_end = split_reasoning("".join(pieces))
        r_sum, r_n, a_sum, pos = 0.0, 0, 0.0, 0
        for k, piece in enumerate(pieces):
            begin, pos = pos, pos + len(piece)
            if loss_mask[i, k] <= 0:
                continue
            if begin < a_end and pos > a_start:
                a_sum += float(logp[i, k])
            elif pos <= r_end and piece:
                r_sum, r_n = r_sum + float(logp[i, k]), r_n + 1
        out.append((r_sum / r_n if r_n else 0.0) + a_sum)
    return out


# ------------------------------------------------------------------------------------ relevance
def tfidf_cosines(pairs: list[tuple[str, str]], corpus: list[str]) -> list[float]:
    """cos(tfidf(a), tfidf(b)) for each pair: raw counts of lower-cased \\w+ tokens times the
    smooth idf(t) = ln((1 + N) / (1 + df(t))) + 1 over the N `corpus` texts (scikit-learn's
    default). 0 when either text has no tokens."""
    docs = [Counter(_WORD.findall(d.lower())) for d in corpus]
    df = Counter(t for d in docs for t in d)
    n = len(docs)

    def vec(text: str) -> dict[str, float]:
        tf = Counter(_WORD.findall(text.lower()))
        return {t: c * (math.log((1 + n) / (1 + df.get(t, 0))) + 1) for t, c in tf.items()}

    out = []
    for a, b in pairs:
        va, vb = vec(a), vec(b)
        dot = sum(w * vb.get(t, 0.0) for t, w in va.items())
        na, nb = math.sqrt(sum(w * w for w in va.values())), math.sqrt(sum(w * w for w in vb.values()))
        out.append(dot / (na * nb) if na and nb else 0.0)
    return out


def relevance_scores(prompts: list, texts: list[str], contexts: list | None = None, *,
                     scorer: str | None = None) -> list[float]:
    """Relevance of each completion's reasoning R to its question Q (and context D).

    Proxy (scorer=None): cos(R, Q), or the mean of cos(R, Q) and cos(R, D) where a context is
    given, TF-IDF over the batch's unique questions, contexts and reasonings (`tfidf_cosines`),
    in [0, 1]. scorer=path: the score of a `postrl rm` reward model on (Q, R).
    """
    questions = [_prompt_text(p) for p in prompts]
    reasonings = [_parts(t)[0] for t in texts]
    if scorer is not None:
        from postrl.rewards.reward_model import load_cached

        return [float(v) for v in load_cached(str(scorer)).score_responses(list(prompts), reasonings)]
    ctx = [None] * len(texts) if contexts is None else [None if c is None else str(c) for c in contexts]
    corpus = list(dict.fromkeys(questions + [c for c in ctx if c is not None])) + reasonings
    rq = tfidf_cosines(list(zip(reasonings, questions)), corpus)
    rd = tfidf_cosines([(r, c or "") for r, c in zip(reasonings, ctx)], corpus)
    return [a if c is None else (a + b) / 2 for a, b, c in zip(rq, rd, ctx)]


# ------------------------------------------------------------------------------------ coherence
def _equations_hold(reasoning: str) -> tuple[int, int]:
    """(equations that hold, equations checked) over every "expr = number" in the reasoning."""
    held = checked = 0
    for lhs, rhs in _EQUATION.findall(reasoning):
        try:
            value = evaluate_arithmetic(ast.parse(lhs.strip(), mode="eval"), [])
        except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, TypeError, OverflowError):
            continue
        checked += 1
        held += value == Fraction(rhs)
    return held, checked


def coherence_scores(prompts: list, texts: list[str], *, scorer: str | None = None) -> list[float]:
    """Logical consistency of each completion's reasoning R with itself and its answer A.

    Proxy (scorer=None), the mean of the checks that apply, in [0, 1]:
      steps   fraction of "expr = number" equations in R that hold (exact arithmetic over
              integers with + - * / and parentheses; skipped when R has none);
      answer  1 if A's text occurs in R's last non-blank line (the answer follows from the last
              step), else 0 (skipped when A is empty).
    An empty R scores 0 (no reasoning to be coherent). scorer=path: a `postrl rm` model's score
    on (Q, R), as the paper scores coherence with an outcome reward model.
    """
    parts = [_parts(t) for t in texts]
    if scorer is not None:
        from postrl.rewards.reward_model import load_cached

        return [float(v) for v in load_cached(str(scorer)).score_responses(list(prompts), [r for r, _ in parts])]
    out = []
    for reasoning, answer in parts:
        lines = [line.strip() for line in reasoning.split("\n") if line.strip()]
        if not lines:
            out.append(0.0)
            continue
        checks = []
        held, checked = _equations_hold(reasoning)
        if checked:
            checks.append(held / checked)
        if answer.strip():
            checks.append(1.0 if answer.strip() in lines[-1] else 0.0)
        out.append(sum(checks) / len(checks) if checks else 0.0)
    return out


# ------------------------------------------------------------------------------ entries
@REWARDS.register("drm_relevance", paper=PAPER, arxiv=ARXIV,
                  summary="DRM relevance: TF-IDF cosine of the reasoning with the question (and context), or a "
                          "reward model's score (a proxy for the paper's NLI/relevance models)")
def drm_relevance(prompts: list, completions: list, *, scorer: str | None = None, context_column: str = "context",
                  **kwargs) -> list[float | None]:
    """score_Rel(R; Q, D) = cos_tfidf(R, Q)                        no context
                            (cos_tfidf(R, Q) + cos_tfidf(R, D)) / 2   a `context_column` value D
    R is the text before the answer (`split_reasoning`); idf over the batch (see
    `tfidf_cosines`). scorer: a `postrl rm` model directory scoring (Q, R) instead. A lexical
    proxy: it rewards sharing the question's rarer words and numbers, not entailment.
    """
    texts = [completion_text(c) for c in completions]
    return relevance_scores(prompts, texts, kwargs.get(context_column), scorer=scorer)


@REWARDS.register("drm_coherence", paper=PAPER, arxiv=ARXIV,
                  summary="DRM coherence: fraction of arithmetic steps that hold and whether the answer follows "
                          "the last step, or a reward model's score (a proxy for the paper's ORM)")
def drm_coherence(prompts: list, completions: list, *, scorer: str | None = None, **kwargs) -> list[float | None]:
    """score_Coh(R, A) = mean over the applicable checks of
          (# "expr = number" steps in R that hold) / (# such steps)     and   1[A in last line of R]
    0 when R is empty. scorer: a `postrl rm` model directory scoring (Q, R) instead (the paper
    scores coherence with a trained outcome reward model; the proxy only checks arithmetic and
    the answer's link to the last step).
    """
    return coherence_scores(prompts, [completion_text(c) for c in completions], scorer=scorer)


@PROCESS_REWARDS.register("drm_confidence", paper=PAPER, arxiv=ARXIV,
                          summary="DRM confidence: mean log-prob of the reasoning tokens + summed log-prob of the "
                                  "answer tokens, on the last token")
def drm_confidence(ctx: ProcessContext, *, normalize: Normalize = "none") -> ProcessRewards:
    """score_Conf = (1/|R|) sum_{t in R} log pi_behaviour(t) + sum_{t in A} log pi_behaviour(t)

    (the paper's definition), from the batch's behaviour log-probs, put on each sequence's last
    policy token (token_rewards; no steps). normalize: "group" z-scores it among completions of
    one prompt, "batch" over the batch, "none" keeps it (<= 0). Rewarding the policy's own
    certainty pushes entropy down; pair it with an outcome or the other dimensions (`drm`).
    """
    return _on_last_token(ctx, _normalized(confidence_scores(ctx), ctx.batch.group_ids, normalize))


@PROCESS_REWARDS.register("drm", paper=PAPER, arxiv=ARXIV,
                          summary="DRM: weighted sum of normalised confidence, relevance and coherence, on the last token")
def drm(ctx: ProcessContext, *, confidence_weight: float = 1.0, relevance_weight: float = 1.0,
        coherence_weight: float = 1.0, normalize: Normalize = "group", scorer: str | None = None,
        context_column: str = "context") -> ProcessRewards:
    """R_DRM = w_conf * N(score_Conf) + w_rel * N(score_Rel) + w_coh * N(score_Coh)

    on each sequence's last policy token, where N z-scores a dimension among the completions of
    one prompt (normalize="group": (s - mean_g) / std_g, 0 when std_g = 0 or the group has one
    member), over the batch ("batch") or not at all ("none"). Normalising first makes the
    weights comparable: confidence is a log-prob (<= 0), the proxies lie in [0, 1]. Equal
    weights and group z-scores are this project's defaults; the paper's exact combination could
    not be confirmed offline. scorer: one `postrl rm` model scoring relevance and coherence.
    A sequence with no tokens gets nothing.
    """
    prompts = [r.prompt for r in ctx.rows]
    contexts = [r.columns.get(context_column) for r in ctx.rows]
    gids = ctx.batch.group_ids
    dims = [(confidence_weight, confidence_scores(ctx)),
            (relevance_weight, relevance_scores(prompts, ctx.texts, contexts, scorer=scorer)),
            (coherence_weight, coherence_scores(prompts, ctx.texts, scorer=scorer))]
    total: list[float | None] = [0.0] * len(ctx.texts)
    for w, scores in dims:
        for i, s in enumerate(_normalized(scores, gids, normalize)):
            total[i] = None if s is None or total[i] is None else total[i] + w * s
    return _on_last_token(ctx, total)


# ------------------------------------------------------------------------------------- helpers
def _normalized(scores: list[float | None], group_ids: torch.Tensor, normalize: Normalize) -> list[float | None]:
    if normalize not in ("none", "group", "batch"):
        raise ValueError(f"DRM normalize must be 'none', 'group' or 'batch', got {normalize!r}")
    if normalize == "none":
        return list(scores)
    keys = group_ids.tolist() if normalize == "group" else [0] * len(scores)
    out: list[float | None] = list(scores)
    for g in set(keys):
        idx = [i for i, k in enumerate(keys) if k == g and scores[i] is not None]
        vals = torch.tensor([scores[i] for i in idx], dtype=torch.float64)
        std = float(vals.std(unbiased=False)) if len(idx) > 1 else 0.0
        for i in idx:
            out[i] = (scores[i] - float(vals.mean())) / std if std > 1e-12 else 0.0
    return out


def _on_last_token(ctx: ProcessContext, scores: list[float | None]) -> ProcessRewards:
    """A per-sequence score on the last policy token of each completion (None: nowhere)."""
    batch = ctx.batch
    token_rewards = torch.zeros(batch.completion_ids.shape, dtype=torch.float32)
    policy = (batch.loss_mask > 0) & (batch.completion_mask > 0)
    for i, s in enumerate(scores):
        where = policy[i].nonzero()
        if s is not None and len(where):
            token_rewards[i, int(where[-1])] = float(s)
    return ProcessRewards(token_rewards, [[] for _ in scores], [[] for _ in scores])
