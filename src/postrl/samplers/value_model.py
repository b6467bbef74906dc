"""The prompt-value predictor of the `pcl` sampler: hashed text features -> logistic regression.

PCL trains a value model online to predict each prompt's expected reward under the current
policy. Ours is deliberately small, so it runs inside the sampler on CPU in microseconds:

    phi(x)  = log(1 + count) of the prompt's character 1-, 2- and 3-grams and word/symbol tokens,
              hashed into `buckets` bins (crc32: the same bins in every process), plus a constant 1
    V(x)    = sigmoid(theta . phi(x))
    train:  Adam on  L = mean_x (V(x) - y_x)^2   (y_x: the pass rate x's group just got)

theta starts at 0 (V = 1/2 for every prompt), so the first selections are uniform; no random
init is needed and runs are deterministic. theta and the Adam moments serialise to JSON lists of
float32 values, which reload bit for bit.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from typing import Any

import torch

_TOKEN = re.compile(r"\w+|[^\w\s]")


def prompt_text(prompt: str | list[dict]) -> str:
    """The text of a plain or chat prompt (messages' contents joined by newlines)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(str(m.get("content", "")) for m in prompt)


def hashed_features(text: str, buckets: int) -> dict[int, float]:
    """bin -> log(1 + count) of the text's character 1..3-grams and tokens, hashed into `buckets` bins."""
    grams = Counter(f"c{n}:{text[i:i + n]}" for n in (1, 2, 3) for i in range(len(text) - n + 1))
    grams.update(f"w:{t}" for t in _TOKEN.findall(text))
    bins: Counter = Counter()
    for key, count in grams.items():
        bins[zlib.crc32(key.encode("utf-8")) % buckets] += count
    return {b: math.log1p(c) for b, c in bins.items()}


class PromptValueModel:
    """V(x) = sigmoid(theta . phi(x)) over the rows' prompt texts; features are computed once per row."""

    def __init__(self, texts: list[str], *, buckets: int, lr: float, updates: int):
        self.texts, self.buckets, self.updates = texts, buckets, updates
        self._features: dict[int, dict[int, float]] = {}
        self.theta = torch.zeros(buckets + 1, requires_grad=True)  # last entry: the bias
        self.optimizer = torch.optim.Adam([self.theta], lr=lr)

    def design(self, rows: list[int]) -> torch.Tensor:
        """[len(rows), buckets + 1] features, the last column all ones."""
        x = torch.zeros(len(rows), self.buckets + 1)
        x[:, -1] = 1.0
        at_r, at_b, values = [], [], []
        for r, i in enumerate(rows):
            if i not in self._features:
                self._features[i] = hashed_features(self.texts[i], self.buckets)
            for b, v in self._features[i].items():
                at_r.append(r)
                at_b.append(b)
                values.append(v)
        x[at_r, at_b] = torch.tensor(values)  # one scatter, not a Python write per entry
        return x

    @torch.no_grad()
    def predict(self, rows: list[int]) -> list[float]:
        return torch.sigmoid(self.design(rows) @ self.theta).tolist()

    def fit(self, rows: list[int], targets: list[float]) -> float:
        """`updates` Adam steps on the squared error; returns the loss before the first step."""
        x, y = self.design(rows), torch.tensor(targets, dtype=torch.float32)
        first = None
        for _ in range(self.updates):
            self.optimizer.zero_grad()
            loss = (torch.sigmoid(x @ self.theta) - y).pow(2).mean()
            loss.backward()
            self.optimizer.step()
            first = loss.item() if first is None else first
        return first

    def state_dict(self) -> dict[str, Any]:
        st = self.optimizer.state.get(self.theta, {})
        adam = {"step": float(st["step"]), "exp_avg": st["exp_avg"].tolist(),
                "exp_avg_sq": st["exp_avg_sq"].tolist()} if st else None
        return {"theta": self.theta.detach().tolist(), "adam": adam}

    def load_state_dict(self, state: dict[str, Any], name: str) -> None:
        if len(state["theta"]) != self.buckets + 1:
            raise ValueError(f"{name}: the checkpoint's value model has {len(state['theta']) - 1} feature bins but "
                             f"sampler.kwargs.buckets is {self.buckets}; resume with the checkpointed run's buckets")
        with torch.no_grad():
            self.theta.copy_(torch.tensor(state["theta"], dtype=torch.float32))
        self.optimizer.state.clear()
        adam = state["adam"]
        if adam is not None:
            self.optimizer.state[self.theta] = {
                "step": torch.tensor(adam["step"], dtype=torch.float32),
                "exp_avg": torch.tensor(adam["exp_avg"], dtype=torch.float32),
                "exp_avg_sq": torch.tensor(adam["exp_avg_sq"], dtype=torch.float32)}
