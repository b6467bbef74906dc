"""B-STaR: each round's sampling temperature and reward threshold, chosen by the balance score.

"B-STaR: Monitoring and Balancing Exploration and Exploitation in Self-Taught Reasoners", Zeng
et al., arXiv 2412.17256. Before a round of `postrl raft` samples its prompts, a small probe of
training prompts is sampled at every temperature of a grid; for every (temperature, threshold)
pair the completions that the round's selection rule (`raft.keep`) would keep at that threshold
are scored by the balance score, and the best pair is used for the round:

    bs_i = min(n'_i / n*, 1) * n'_i / n_i        (0 when n_i = 0)
    BS   = mean_i bs_i  over the probe prompts

n_i is the number of *unique* kept completions of prompt i (duplicates by token ids counted
once), n'_i how many of those are correct, and n* the number of unique correct responses per
prompt that is "enough" (the cap). The first factor rewards exploration (more distinct correct
answers, up to n*), the second exploitation (the kept set is mostly correct). "Correct" is the
ground truth, here the first reward function >= `eval.success_threshold` (the rule of greedy
accuracy), kept apart from the reward threshold that decides what is kept.

Where this follows the authors' code (hkust-nlp/B-STaR `determine_hyper.py`) rather than the
paper text, which could not be checked here: n* = 8 (hard-coded there), and unique-by-output
de-duplication. That code always adds the reference solution to each prompt's candidates, so no
prompt has n_i = 0; without it, a prompt with nothing kept scores 0 here (so a threshold that
keeps nothing cannot win by keeping a few lucky prompts). Ties go to the first pair in grid
order (temperatures outer, thresholds inner). All temperatures sample the probe with one seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from postrl.trainers.scoring import completion_token_lists, primary_success, score_batch


def balance_score(kept: list[int], correct: list[bool], group_ids: list[int], completions: list[list[int]],
                  n_groups: int, n_star: int) -> float:
    """The mean over `n_groups` prompts of min(n'_i/n*, 1) * n'_i/n_i on the rows `kept`.

    `correct[j]`, `group_ids[j]`, `completions[j]` describe row j of the sampled batch; a kept
    completion equal (same token ids) to another kept one of its prompt counts once."""
    if n_star < 1:
        raise ValueError(f"balance_score: n_star must be >= 1, got {n_star}")
    unique: list[dict[tuple[int, ...], bool]] = [{} for _ in range(n_groups)]
    for j in kept:
        unique[group_ids[j]].setdefault(tuple(completions[j]), bool(correct[j]))
    total = 0.0
    for seen in unique:
        n, n_correct = len(seen), sum(seen.values())
        if n:
            total += min(n_correct / n_star, 1.0) * n_correct / n
    return total / n_groups if n_groups else 0.0


@dataclass
class Choice:
    """The configuration a round uses, and every candidate's score (for the log)."""

    temperature: float
    threshold: float
    balance: float
    scores: dict[tuple[float, float], float]


def choose(engine, tokenizer, rewards, rows: list, prompt_ids: list[list[int]], params, *, temperatures: list[float],
           thresholds: list[float], keep: str, n_star: int, success_threshold: float, seed: int) -> Choice:
    """Sample `rows` (the probe) at each temperature, score every (temperature, threshold) pair."""
    from postrl.trainers.raft import select_completions

    scores: dict[tuple[float, float], float] = {}
    for t in temperatures:
        batch = engine.generate(prompt_ids, replace(params, temperature=t), seed=seed)
        result = score_batch(batch, rows, tokenizer, rewards)
        correct = primary_success(result, rewards, success_threshold).bool().tolist()
        groups, completions = batch.group_ids.tolist(), completion_token_lists(batch)
        for tau in thresholds:
            kept = select_completions(result.total, batch.group_ids, keep=keep, threshold=tau)
            scores[(t, tau)] = balance_score(kept, correct, groups, completions, len(rows), n_star)
    best = max(scores, key=lambda k: scores[k])  # max keeps the first of equal scores: grid order
    return Choice(best[0], best[1], scores[best], scores)


def probe_indices(n_rows: int, n_probe: int, seed: int) -> list[int]:
    """`n_probe` distinct training rows, a pure function of the seed (so a resumed run draws the same)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_rows, generator=g)[:n_probe].tolist()
