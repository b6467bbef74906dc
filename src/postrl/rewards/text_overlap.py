"""Reference-overlap rewards: sentence BLEU and ROUGE of a completion against the row's references.

BLEUBERI (arXiv 2505.11080) trains instruction following with GRPO and BLEU against reference
outputs as the only reward. Both metrics are written here in plain Python so that no metric
package is needed at run time: `bleu` reproduces sacrebleu's `sentence_bleu` (its defaults:
tokenizer 13a, exponential smoothing, effective order, 4-grams, case-sensitive) and `rouge` the
`rouge-score` package's ROUGE-1/2/L with its default tokenizer (no stemming). Both were checked
against those packages (sacrebleu 2.6.0, rouge-score 0.1.2) on the strings in
tests/rewards/test_text_overlap.py.

The references come from a dataset column (`references` by default, `column` to choose another):
one string or a list of strings per row. A row whose reference is None gets None ("not
applicable"); several references are handled as each metric defines it (BLEU: clipped counts
against the per-n-gram maximum over references and the closest reference length; ROUGE: the
best-scoring reference).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from typing import Any, Literal

from postrl.rewards.builtin import completion_text
from postrl.rewards.registry import REWARDS


def references_of(kwargs: dict[str, Any], column: str, reward: str) -> list[list[str] | None]:
    """The `column` values as one list of reference strings per row (None stays None), or an error
    that names the column, the row and the fix."""
    if column not in kwargs:
        present = sorted(k for k in kwargs if k != "completion_ids")
        raise ValueError(f"reward {reward!r} compares completions with the dataset column {column!r}, which the "
                         f"data does not have (its columns: {', '.join(present) or 'none'}); add a {column!r} column "
                         "(a string or a list of strings per row) or set the reward's kwargs.column to the column "
                         "that holds the references (e.g. `column: answer`)")
    out: list[list[str] | None] = []
    for i, value in enumerate(kwargs[column]):
        if value is None:
            out.append(None)
            continue
        refs = [value] if isinstance(value, str) else value
        if not isinstance(refs, (list, tuple)) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"reward {reward!r}: column {column!r} at batch row {i} is {value!r}; give a string or a "
                             "non-empty list of strings per row (None: no reference, reward None)")
        out.append(list(refs))
    return out


def check_reward_columns(specs, rows) -> None:
    """Before the first rollout: each reward that reads a dataset column named by its `column`
    hyper-parameter (registry needs "column") finds that column in the training rows."""
    for i, spec in enumerate(specs):
        if spec.name not in REWARDS or "column" not in REWARDS.get(spec.name).needs:
            continue
        column = spec.kwargs.get("column", REWARDS.get(spec.name).defaults["column"])
        if rows and not any(column in row.columns for row in rows):
            have = sorted(set().union(*(row.columns.keys() for row in rows)))
            raise ValueError(f"rewards[{i}] ({spec.name}) compares completions with the dataset column {column!r}, "
                             f"which no training row has (their columns: {', '.join(have) or 'none'}); add a "
                             f"{column!r} column (a string or a list of strings per row) or set "
                             f"rewards[{i}].kwargs.column to the column that holds the references")


# ------------------------------------------------------------------------------------------- BLEU
_13A_RULES = [
    # the language-dependent part of mteval-v13a (sacrebleu's TokenizerRegexp)
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # a dash after a digit
]
_SMOOTH_DEFAULTS = {"exp": None, "floor": 0.1, "add-k": 1.0, "none": None}  # sacrebleu's


@lru_cache(maxsize=2**14)
def tokenize_13a(line: str) -> tuple[str, ...]:
    """mteval-v13a tokenisation, as sacrebleu's default `13a` tokenizer."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, repl in _13A_RULES:
        line = pattern.sub(repl, line)
    return tuple(line.split())


def _ngrams(tokens: tuple[str, ...], max_order: int) -> Counter:
    return Counter(tokens[i:i + n] for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1))


def sentence_bleu(hypothesis: str, references: list[str], *, max_order: int = 4,
                  smooth: Literal["exp", "floor", "add-k", "none"] = "exp", smooth_value: float | None = None,
                  effective_order: bool = True, lowercase: bool = False,
                  tokenize: Literal["13a", "none"] = "13a") -> float:
    """BLEU of one hypothesis against its references, on sacrebleu's 0-100 scale.

        p_n  = sum_g min(c_hyp(g), max_ref c_ref(g)) / sum_g c_hyp(g)      over the n-grams g of order n
        BP   = 1 if |hyp| >= r  else exp(1 - r / |hyp|)   (r: the closest reference length, ties -> shorter)
        BLEU = 100 * BP * exp(mean_{n <= N'} log p_n)

    exp smoothing (mteval's NIST method 3): the k-th order with no match gets p_n = 1 / (2^k total_n);
    floor: p_n = smooth_value / total_n (0.1); add-k: orders n >= 2 add smooth_value (1) to both counts;
    none: such an order makes BLEU 0. N' = the highest order the hypothesis has n-grams of when
    `effective_order` (sacrebleu's sentence default), else `max_order`. No matching unigram at all
    gives 0.
    """
    def prep(s: str) -> tuple[str, ...]:
        s = (s.lower() if lowercase else s).rstrip()
        return tokenize_13a(s) if tokenize == "13a" else tuple(s.split())

    hyp = prep(hypothesis)
    ref_counts: Counter = Counter()
    ref_lens = []
    for ref in references:
        tokens = prep(ref)
        ref_lens.append(len(tokens))
        for g, c in _ngrams(tokens, max_order).items():
            ref_counts[g] = max(ref_counts[g], c)
    ref_len = min(ref_lens, key=lambda r: (abs(len(hyp) - r), r))
    correct, total = [0.0] * max_order, [0.0] * max_order
    for g, c in _ngrams(hyp, max_order).items():
        total[len(g) - 1] += c
        correct[len(g) - 1] += min(c, ref_counts.get(g, 0))
    bp = 1.0 if len(hyp) >= ref_len else (math.exp(1 - ref_len / len(hyp)) if hyp else 0.0)
    if not any(correct):
        return 0.0
    value = _SMOOTH_DEFAULTS[smooth] if smooth_value is None else smooth_value
    precisions, order, halvings = [0.0] * max_order, max_order, 1.0
    for n in range(max_order):
        if smooth == "add-k" and n > 0:
            correct[n] += value
            total[n] += value
        if total[n] == 0:
            break
        if effective_order:
            order = n + 1
        if correct[n] == 0:
            if smooth == "exp":
                halvings *= 2
                precisions[n] = 1.0 / (halvings * total[n])
            elif smooth == "floor":
                precisions[n] = value / total[n]
        else:
            precisions[n] = correct[n] / total[n]
    # precisions as fractions (sacrebleu uses percentages: the same up to rounding, and a perfect
    # match is exactly 100 here); log 0 is floored as sacrebleu's my_log does
    logs = [math.log(p) if p > 0 else -9999999999.0 for p in precisions[:order]]
    return 100.0 * bp * math.exp(sum(logs) / order)


@REWARDS.register("bleu", paper="BLEUBERI: BLEU is a surprisingly effective reward for instruction following",
                  arxiv="2505.11080", needs=("column",),
                  summary="sentence BLEU / 100 (sacrebleu's defaults) of the completion against the row's references")
def bleu(prompts: list, completions: list, *, column: str = "references", max_order: int = 4,
         smooth: Literal["exp", "floor", "add-k", "none"] = "exp", smooth_value: float | None = None,
         effective_order: bool = True, lowercase: bool = False, tokenize: Literal["13a", "none"] = "13a",
         **kwargs) -> list[float | None]:
    """BLEU of each completion against the references in `column`, in [0, 1] (BLEUBERI's reward).

        r = sentence_bleu(completion, references) / 100

    with sacrebleu's `sentence_bleu` defaults (13a tokenizer, exp smoothing, effective order,
    max_order 4, case-sensitive): p_n clipped n-gram precisions, BP the brevity penalty against the
    closest reference length, BLEU = BP * exp(mean_n log p_n). The paper's exact BLEU settings
    could not be confirmed; these are sacrebleu's. None when the row has no reference.
    """
    if smooth not in _SMOOTH_DEFAULTS:
        raise ValueError(f"bleu: smooth must be one of {', '.join(_SMOOTH_DEFAULTS)}, got {smooth!r}")
    if tokenize not in ("13a", "none"):
        raise ValueError(f"bleu: tokenize must be '13a' or 'none', got {tokenize!r}")
    if max_order < 1:
        raise ValueError(f"bleu: max_order must be >= 1, got {max_order}")
    out: list[float | None] = []
    for c, refs in zip(completions, references_of(kwargs, column, "bleu")):
        out.append(None if refs is None else sentence_bleu(
            completion_text(c), refs, max_order=max_order, smooth=smooth, smooth_value=smooth_value,
            effective_order=effective_order, lowercase=lowercase, tokenize=tokenize) / 100.0)
    return out


# ------------------------------------------------------------------------------------------ ROUGE
_NON_ALPHANUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenizer: lowercase, every run of characters outside [a-z0-9] is a
    separator (so non-ASCII letters are dropped, as there), no stemming."""
    return [t for t in _NON_ALPHANUM.sub(" ", text.lower()).split() if t]


def _lcs_length(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_scores(hypothesis: str, reference: str, variant: Literal["rouge1", "rouge2", "rougeL"]
                 ) -> tuple[float, float, float]:
    """(precision, recall, F1) of one hypothesis against one reference.

        ROUGE-n: overlap = sum_g min(c_hyp(g), c_ref(g)) over n-grams g;  P = overlap / max(#hyp n-grams, 1),
                 R = overlap / max(#ref n-grams, 1)
        ROUGE-L: P = LCS / |hyp|, R = LCS / |ref|  (0 when either is empty)
        F = 2PR / (P + R)   (0 when P + R = 0)
    """
    hyp, ref = rouge_tokens(hypothesis), rouge_tokens(reference)
    if variant == "rougeL":
        if not hyp or not ref:
            return 0.0, 0.0, 0.0
        lcs = _lcs_length(ref, hyp)
        p, r = lcs / len(hyp), lcs / len(ref)
    else:
        n = int(variant[-1])
        h = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
        g = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        overlap = sum(min(c, h[k]) for k, c in g.items())
        p, r = overlap / max(sum(h.values()), 1), overlap / max(sum(g.values()), 1)
    return p, r, (2 * p * r / (p + r) if p + r > 0 else 0.0)


_VARIANTS = ("rouge1", "rouge2", "rougeL")
_MEASURES = {"precision": 0, "recall": 1, "f": 2}


@REWARDS.register("rouge", paper="ROUGE: A Package for Automatic Evaluation of Summaries (Lin, 2004)",
                  needs=("column",),
                  summary="ROUGE-L (or ROUGE-1/2) F1 of the completion against the row's reference(s)")
def rouge(prompts: list, completions: list, *, column: str = "references",
          variant: Literal["rouge1", "rouge2", "rougeL"] = "rougeL",
          measure: Literal["f", "precision", "recall"] = "f", **kwargs) -> list[float | None]:
    """ROUGE of each completion against the references in `column`, in [0, 1].

        r = max_{ref} measure(ROUGE-variant(completion, ref))

    ROUGE-1/2: clipped n-gram overlap; ROUGE-L: longest common subsequence; measure f (F1,
    default), precision or recall, as the rouge-score package computes them with its default
    tokenizer and no stemming. Several references: the best one (rouge-score's `score_multi`
    keeps the reference with the best F1; here the best by the chosen measure, the same for
    measure f). BLEUBERI (arXiv 2505.11080) compares ROUGE-L with BLEU as a reference-based reward.
    None when the row has no reference.
    """
    if variant not in _VARIANTS:
        raise ValueError(f"rouge: variant must be one of {', '.join(_VARIANTS)}, got {variant!r}")
    if measure not in _MEASURES:
        raise ValueError(f"rouge: measure must be one of {', '.join(_MEASURES)}, got {measure!r}")
    k = _MEASURES[measure]
    out: list[float | None] = []
    for c, refs in zip(completions, references_of(kwargs, column, "rouge")):
        text = completion_text(c)
        out.append(None if refs is None else max(rouge_scores(text, ref, variant)[k] for ref in refs))
    return out
