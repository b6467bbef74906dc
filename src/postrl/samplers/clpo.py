"""CLPO: difficulty bands from the step's own rollouts; hard problems are simplified and medium ones
diversified (by the policy itself, or a stand-in rewriter) within the step, keeping their answers."""

from __future__ import annotations

from typing import Any

from postrl.samplers.base import SAMPLERS, Addition
from postrl.samplers.beta import pass_fail
from postrl.samplers.clpo_rewrite import (ARITHMETIC, DIVERSIFY_TEMPLATE, KINDS, SIMPLIFY_TEMPLATE,
                                          make_rewriter)
from postrl.samplers.columns import text_column
from postrl.samplers.pick import check_param
from postrl.samplers.uniform import Uniform

NAME = "clpo"
MODES = {"both": ("simplify", "diversify"), "hard_only": ("simplify",), "medium_only": ("diversify",)}
STEP_KEYS = ("hard", "medium", "easy", "rewrite_groups", "rewrite_kept", "rewrite_failed", "rescued")


def difficulty(acc: float, hard_upper: float, medium_upper: float) -> str:
    """The band of a problem whose group passed with rate `acc`: hard, medium or easy."""
    return "hard" if acc <= hard_upper else "medium" if acc <= medium_upper else "easy"


@SAMPLERS.register(NAME, paper="CLPO: Curriculum Learning meets Policy Optimization for LLM Reasoning",
                   arxiv="2509.25004",
                   summary="difficulty from the step's own rollouts; within the step hard problems (pass rate <= 0.3) "
                           "are simplified and medium ones (<= 0.7) diversified by the policy itself, keeping the "
                           "answer; originals and rewrites with mixed results are trained on",
                   needs=("rows", "generate"))
class CLPO(Uniform):
    """Curriculum Learning meets Policy Optimization: online curriculum + adaptive problem restructuring.

    Online curriculum, from the step's own rollouts: the group of problem q (n completions) has
        acc(q) = (1/n) sum_i 1[r_i >= threshold]
        hard    acc <= hard_upper                    (0.3)
        medium  hard_upper < acc <= medium_upper     (0.7)
        easy    otherwise
    Adaptive problem restructuring, within the same step: a rewriter turns a hard problem into a
    simpler one and a medium problem into a differently worded one,
        q' = rewrite(q, a, kind)        kind = simplify (hard) | diversify (medium)
    given the answer a, which q' keeps: q' replaces the row's question (`Addition.prompt`) and the
    rewards score it against the row's own answer column. Each q' is generated as a full group of n.
    Mixing and verification (the authors' code): a group, original or rewritten, is trained on iff
        0 < acc < 1                                   (some, not all, completions pass)
    so a rewrite counts only when the policy solved it at least once with the original's answer and
    not every time. Originals come first; verified rewrites (simplified ones first, then
    diversified, each in draw order) take the slots of rejected originals; leftover rewrites are tried
    in further refill rounds until the step's prompts_per_step slots are full or none are left; then the
    batch is topped up with rejected groups (zero advantage under group-normalised estimators).

    `rewriter`: "policy" (the paper: the current policy samples one rewrite per problem with
    `simplify_template` / `diversify_template`, at `rewrite_temperature`, at most
    `rewrite_max_tokens` tokens; the question is cut out of a ```text block and kept when 10 < length
    < 2000 characters), "arithmetic" (rules for task:arithmetic: the operands swapped, spaced or the
    operator in words; a simplified problem has part of the sum or product already done, e.g.
    12+34= -> 42+4=; samplers/clpo_rewrite.py), or "module:function" ((question, answer, kind) ->
    str | None). A rewrite that is empty or equal to the original is dropped (ours). `mode`:
    "both", "hard_only", "medium_only" (the paper's ablation).

    Defaults from the authors' code and run script (csuking/CLPO): bands 0.3 / 0.7, mode both, one
    rewrite per problem at temperature 0.7 and at most 400 new tokens, the (0, 1) filter for
    originals and rewrites, hard rewrites first when the batch is cut. The templates are condensed
    from theirs (no one-shot example, no Qwen3 answer wrapper). Deviations: the step keeps the
    trainer's fixed prompts_per_step groups (theirs grows by the kept rewrites), so a kept medium
    problem's variant trains only in a slot freed by another problem; originals are drawn uniformly
    (seeded shuffled epochs, as their dataloader). Not implemented: the difficulty-aware KL (their
    run halves the KL coefficient on hard samples) and the v2 paper's loss on the rewriting turns.
    State: the draw cursor, the step's draw and rewrite queue, the rewriter call counter and per row
    the rewrites tried and kept (the arithmetic rewriter rotates its forms with the tried count).
    """

    filters_groups = True
    decorates = True

    def __init__(self, dataset_size: int, seed: int = 0, *, rewriter: str = "policy", mode: str = "both",
                 hard_upper: float = 0.3, medium_upper: float = 0.7, threshold: float = 1.0,
                 rewrite_max_tokens: int = 400, rewrite_temperature: float = 0.7,
                 simplify_template: str = SIMPLIFY_TEMPLATE, diversify_template: str = DIVERSIFY_TEMPLATE,
                 column: str = "answer", shuffle: bool = True, rows: list, generate):
        super().__init__(dataset_size, seed, shuffle=shuffle)
        check_param(NAME, "mode", mode, mode in MODES, f"one of {', '.join(MODES)}")
        check_param(NAME, "hard_upper", hard_upper, 0.0 <= hard_upper < 1.0, "in [0, 1)")
        check_param(NAME, "medium_upper", medium_upper, hard_upper <= medium_upper < 1.0,
                    f"in [hard_upper={hard_upper}, 1) (a pass rate of 1 is never medium)")
        check_param(NAME, "rewrite_max_tokens", rewrite_max_tokens, rewrite_max_tokens >= 1, ">= 1")
        check_param(NAME, "rewrite_temperature", rewrite_temperature, rewrite_temperature > 0, "> 0")
        for key, template in (("simplify_template", simplify_template), ("diversify_template", diversify_template)):
            check_template(key, template)
        self.kinds, self.threshold = MODES[mode], threshold
        self.hard_upper, self.medium_upper = hard_upper, medium_upper
        self.answers = text_column(rows, column, NAME)
        if len(self.answers) != dataset_size:
            raise ValueError(f"{NAME}: got {len(rows)} rows for a dataset of {dataset_size}")
        self.questions = [question_of(row) for row in rows]
        if rewriter == "arithmetic":
            check_arithmetic(rows, self.questions)
        self.rewriter = make_rewriter(rewriter, generate=generate, simplify_template=simplify_template,
                                      diversify_template=diversify_template, max_new_tokens=rewrite_max_tokens,
                                      temperature=rewrite_temperature)
        self.in_step = False
        self.drawn: list[list] = []  # [row, kind, text, original passes] of the last draw ("" kind: original)
        self.queue: list[list] = []  # [row, kind, original passes] of rewrites still to try this step
        self.calls = 0  # rewriter calls so far: seeds a sampling rewriter
        self.tried: dict[int, int] = {}  # row -> rewrites made of it
        self.kept: dict[int, int] = {}  # row -> rewrites of it trained on (verified)
        self.step = dict.fromkeys(STEP_KEYS, 0)
        self.last: dict[str, float] = {}

    def next(self, k: int) -> list[int]:
        if not self.in_step:  # the step's draw: k original problems
            self.in_step = True
            self.max_rounds = 1 + k  # at most one rewrite per original, and a refill round takes at least one
            self.drawn = [[i, "", "", -1] for i in super().next(k)]
            return [row for row, *_ in self.drawn]
        out = []  # a refill round: the next queued problems, rewritten now (failed rewrites are skipped)
        while len(out) < k and self.queue:
            take, self.queue = self.queue[:k - len(out)], self.queue[k - len(out):]
            for (row, kind, passes), text in zip(take, self.rewrite(take)):
                if text is None:
                    self.step["rewrite_failed"] += 1
                else:
                    out.append([row, kind, text, passes])
        self.drawn = out
        return [row for row, *_ in out]

    def rewrite(self, take: list[list]) -> list[str | None]:
        """One rewriter call for the queued [row, kind, passes] items; None where it gave nothing new."""
        rows, kinds, variants = [row for row, *_ in take], [kind for _, kind, _ in take], []
        for row in rows:
            variants.append(self.tried.get(row, 0))
            self.tried[row] = self.tried.get(row, 0) + 1
        texts = self.rewriter([self.questions[r] for r in rows], [self.answers[r] for r in rows], kinds, variants,
                              self.seed * 1_000_003 + self.calls)
        self.calls += 1
        if len(texts) != len(rows):
            raise RuntimeError(f"{NAME}: the rewriter returned {len(texts)} texts for {len(rows)} problems")
        return [t if t and t.strip() and t.strip() != self.questions[r].strip() else None for r, t in zip(rows, texts)]

    def decorate(self, indices: list[int]) -> list[Addition]:
        if list(indices) != [row for row, *_ in self.drawn]:
            raise RuntimeError(f"{NAME}: decorate must follow next() with the rows it returned")
        return [Addition(prompt=text, tag=kind) if kind else Addition() for _, kind, text, _ in self.drawn]

    def keep(self, rewards_G: list[list[float]]) -> list[bool]:
        if len(rewards_G) != len(self.drawn):
            raise RuntimeError(f"{NAME}: keep got {len(rewards_G)} groups for a draw of {len(self.drawn)}")
        out = []
        for (row, kind, _, orig_passes), rewards in zip(self.drawn, rewards_G):
            passes, fails = pass_fail(rewards, self.threshold)
            mixed = passes > 0 and fails > 0
            if not kind:  # an original: its band decides its restructuring
                band = difficulty(passes / (passes + fails), self.hard_upper, self.medium_upper)
                self.step[band] += 1
                plan = {"hard": "simplify", "medium": "diversify"}.get(band)
                if plan in self.kinds:
                    self.queue.append([row, plan, passes])
            else:
                self.step["rewrite_groups"] += 1
                if mixed:
                    self.step["rewrite_kept"] += 1
                    self.kept[row] = self.kept.get(row, 0) + 1
                    self.step["rescued"] += int(kind == "simplify" and orig_passes == 0)
            out.append(mixed)
        self.queue.sort(key=lambda item: KINDS.index(item[1]))  # stable: simplified first, each in draw order
        return out

    def update(self, indices, rewards) -> None:
        """The step is over: report its counts and clear its draw and queue."""
        originals = self.step["hard"] + self.step["medium"] + self.step["easy"]
        self.last = {f"{band}_frac": self.step[band] / max(originals, 1) for band in ("hard", "medium", "easy")}
        self.last.update({key: float(self.step[key]) for key in STEP_KEYS[3:]})
        self.last["rows_with_kept_rewrite"] = float(len(self.kept))
        self.step = dict.fromkeys(STEP_KEYS, 0)
        self.in_step, self.drawn, self.queue = False, [], []

    def metrics(self) -> dict[str, float]:
        return dict(self.last)

    def state_dict(self) -> dict[str, Any]:
        rows = sorted(set(self.tried) | set(self.kept))
        return {**super().state_dict(), "in_step": self.in_step, "drawn": [list(x) for x in self.drawn],
                "queue": [list(x) for x in self.queue], "calls": self.calls, "step": dict(self.step),
                "rows": [[r, self.tried.get(r, 0), self.kept.get(r, 0)] for r in rows]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        rows = [[int(r), int(t), int(k)] for r, t, k in state["rows"]]
        if rows and rows[-1][0] >= self.dataset_size:
            raise ValueError(f"{NAME}: the checkpoint's sampler state counts rewrites of row {rows[-1][0] + 1} but the "
                             f"training set has {self.dataset_size} rows; resume with the same data settings")
        self.in_step, self.calls = bool(state["in_step"]), int(state["calls"])
        self.drawn = [[int(r), str(k), str(t), int(p)] for r, k, t, p in state["drawn"]]
        self.queue = [[int(r), str(k), int(p)] for r, k, p in state["queue"]]
        self.step = {key: int(state["step"][key]) for key in STEP_KEYS}
        self.tried = {r: t for r, t, _ in rows if t}
        self.kept = {r: k for r, _, k in rows if k}


def question_of(row) -> str:
    """The text a rewrite replaces: a string prompt, or the content of a chat prompt's last user message."""
    prompt = row.prompt
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.get("role") == "user"]
    content = (users[-1] if users else prompt[-1]).get("content")
    if not isinstance(content, str):
        raise ValueError(f"{NAME}: training row {row.index + 1}: the last user message has non-text content, "
                         "which cannot be rewritten; use text prompts or another sampler")
    return content


def check_arithmetic(rows, questions: list[str]) -> None:
    """The arithmetic rewriter reads "a+b=", "a-b=", "a*b=" questions (task:arithmetic) only."""
    for row, question in zip(rows, questions):
        if ARITHMETIC.fullmatch(question) is None:
            raise ValueError(f"{NAME}: sampler.kwargs.rewriter='arithmetic' rewrites task:arithmetic problems "
                             f"('a+b=', 'a-b=', 'a*b='); training row {row.index + 1} asks {question[:80]!r}. "
                             "Use rewriter: policy or a 'module:function' rewriter for other data")


def check_template(key: str, template: str) -> None:
    """A rewrite instruction must place the question and may name the answer; nothing else in braces."""
    try:
        template.format(question="", answer="")
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"{NAME}: sampler.kwargs.{key} may only use the fields {{question}} and {{answer}} "
                         f"(write literal braces as {{{{ }}}}): {type(e).__name__}: {e}") from None
    if "{question}" not in template:
        raise ValueError(f"{NAME}: sampler.kwargs.{key} must contain {{question}}, got {template[:80]!r}")
