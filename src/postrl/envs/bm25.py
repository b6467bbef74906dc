"""A small Okapi BM25 ranker in pure Python: the retriever behind the built-in `search` env.

    score(q, d) = sum over distinct query terms t in d of
                  idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

(Robertson et al., "Okapi at TREC-3", 1994; the `1 +` inside the log is Lucene's variant, which
keeps idf positive for terms in more than half the documents.) Defaults k1 = 1.2, b = 0.75 are
the usual Okapi values (Lucene's and Pyserini's too). Terms are lower-cased runs of letters and
digits, so "Zorvak's" matches "zorvak" and "s". Documents with score 0 (no query term) are never
returned, and ties keep corpus order, so a ranking is deterministic.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric runs of `text`."""
    return _TOKEN.findall(text.lower())


class BM25:
    """An index over `docs`; `top_k(query, k)` returns (doc index, score) pairs, best first."""

    def __init__(self, docs: Sequence[str], *, k1: float = 1.2, b: float = 0.75):
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1, self.b = k1, b
        self.tfs = [Counter(tokenize(d)) for d in docs]
        self.lengths = [sum(tf.values()) for tf in self.tfs]
        self.avgdl = sum(self.lengths) / len(docs) if docs else 0.0
        df: Counter = Counter()
        for tf in self.tfs:
            df.update(tf.keys())
        n = len(docs)
        self.idf = {t: math.log(1.0 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}
        # Inverted index: only documents sharing a term with the query are scored.
        self.postings: dict[str, list[int]] = {}
        for i, tf in enumerate(self.tfs):
            for t in tf:
                self.postings.setdefault(t, []).append(i)

    def score(self, query: str, index: int) -> float:
        """BM25 score of document `index` for `query` (0.0 when they share no term)."""
        tf, length = self.tfs[index], self.lengths[index]
        norm = self.k1 * (1.0 - self.b + self.b * length / self.avgdl) if self.avgdl else self.k1
        total = 0.0
        for t in set(tokenize(query)):
            f = tf.get(t, 0)
            if f:
                total += self.idf[t] * f * (self.k1 + 1.0) / (f + norm)
        return total

    def top_k(self, query: str, k: int) -> list[tuple[int, float]]:
        """Up to `k` (doc index, score) pairs with score > 0, best first (ties: corpus order)."""
        candidates = sorted({i for t in set(tokenize(query)) for i in self.postings.get(t, ())})
        scored = [(i, self.score(query, i)) for i in candidates]
        scored = [(i, s) for i, s in scored if s > 0.0]
        scored.sort(key=lambda pair: (-pair[1], pair[0]))
        return scored[:k]
