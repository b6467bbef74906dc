"""MPO's data selection: split preference pairs by reward margin into easy and hard.

"Mixed Preference Optimization: Reinforcement Learning with Data Selection and Better Reference
Model", Gou and Nguyen, arXiv 2403.19443. A reward model scores both responses of every pair;
pairs with a large gap m = r(x, y_w) - r(x, y_l) are easy, those with a small gap hard. Stage 1
runs DPO on the easy pairs; stage 2 runs PPO on the hard pairs' prompts with the stage-1 model as
the KL reference. Here (`data.select` of `postrl pref`):

    easy  = { pairs with m >= t },   hard = the rest
    t     = data.select.threshold, or the data.select.quantile of the training pairs' margins
            (torch.quantile, linear interpolation)

m comes from a reward model directory (`data.select.reward`, a `postrl rm` run's `final`) or
from the `data.columns.margin` column. `postrl pref` trains on the part named by
`data.select.keep` and writes the prompts of both parts, with every other column of the row and
the pair's margin, to RUN_DIR/select/easy_prompts.jsonl and hard_prompts.jsonl, which `postrl
train` reads as `data.source` for stage 2. The paper's threshold could not be confirmed here, so
there is no default: give a threshold or a quantile.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from postrl.data.loading import DataError
from postrl.data.preference import PreferenceRow


def pair_margins(rows: list[PreferenceRow], select, margin_column: str, where: str) -> list[float]:
    """m = r(x, y_w) - r(x, y_l) of every paired row: from the reward model, else from the column."""
    if select.reward:
        from postrl.rewards.reward_model import load_cached

        rm = load_cached(str(select.reward))
        prompts = [r.prompt for r in rows]
        r_w = rm.score_responses(prompts, [r.chosen for r in rows])
        r_l = rm.score_responses(prompts, [r.rejected for r in rows])
        return [float(m) for m in (r_w - r_l)]
    out = []
    for r in rows:
        value = r.columns.get(margin_column)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            found = "is missing" if margin_column not in r.columns else f"is {value!r}, not a number"
            raise DataError(f"row {r.index + 1} of {where}: column {margin_column!r} {found}; data.select splits pairs "
                            "by this reward margin: add the column, set data.columns.margin, or give a reward model "
                            "in data.select.reward")
        out.append(float(value))
    return out


def cut(margins: list[float], *, threshold: float | None, quantile: float | None) -> float:
    """The margin at and above which a pair is easy."""
    if threshold is not None:
        return float(threshold)
    return float(torch.quantile(torch.tensor(margins, dtype=torch.float64), quantile))


def select_pairs(rows: list[PreferenceRow], data_cfg, run_dir: Path, where: str) -> tuple[list[PreferenceRow], dict]:
    """The rows of the part `data.select.keep`; writes both parts' prompts; returns facts for the summary."""
    sel = data_cfg.select
    if any(r.kind != "paired" for r in rows):
        raise DataError(f"{where}: data.select splits chosen/rejected pairs by their reward margin, but the rows are "
                        f"{rows[0].kind}; use paired data or drop data.select")
    margins = pair_margins(rows, sel, data_cfg.columns.margin, where)
    t = cut(margins, threshold=sel.threshold, quantile=sel.quantile)
    parts: dict[str, list[tuple[PreferenceRow, float]]] = {"easy": [], "hard": []}
    for r, m in zip(rows, margins):
        parts["easy" if m >= t else "hard"].append((r, m))
    out_dir = Path(run_dir) / "select"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        with open(out_dir / f"{name}_prompts.jsonl", "w", encoding="utf-8") as f:
            for r, m in part:
                f.write(json.dumps({"prompt": r.prompt, **r.columns, "margin": m}) + "\n")
    kept = [r for r, _ in parts[sel.keep]]
    if not kept:
        side = ">=" if sel.keep == "easy" else "<"
        raise DataError(f"{where}: data.select keeps the {sel.keep} pairs (margin {side} {t:g}) but there are none "
                        f"(margins from {min(margins):g} to {max(margins):g}); change data.select.threshold or "
                        "quantile")
    return kept, {"select_threshold": t, "select_easy": len(parts["easy"]), "select_hard": len(parts["hard"])}
