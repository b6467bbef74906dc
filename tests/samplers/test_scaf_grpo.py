"""Scaf-GRPO: phases (exemption, plateau), tiered plans, the rescue pick, state, errors, a run."""

import json

import pytest
import torch
from helpers import tiny_rl_config, train_keeping_batches

from postrl.config import ConfigError, RLConfig, resolve
from postrl.data.loading import PromptRow
from postrl.samplers import SAMPLERS, Addition


def _rows(tiers):
    return [PromptRow(i, f"q{i}", "1", dict(zip(("hint_1", "hint_2", "hint_3"), t))) for i, t in enumerate(tiers)]


def _scaf(tiers=(("K0", "P0", "S0"), ("K1", "", "S1")), **kw):
    return SAMPLERS["scaf_grpo"](len(tiers), 0, rows=_rows(tiers), **kw)


def test_guidance_waits_for_the_exemption_period_then_plans_tiers_for_failed_groups_only():
    s = _scaf(exemption_steps=2)
    failed_and_solved = [[0.0, 0.0], [1.0, 0.0]]
    assert s.rescue([0, 1], failed_and_solved) == [[], []]
    s.update([0, 1], failed_and_solved)
    assert s.rescue([0, 1], failed_and_solved) == [[], []]  # 1 step done < 2
    s.update([0, 1], failed_and_solved)
    assert s.rescue([0, 1], failed_and_solved) == [
        [Addition(hint="\nKnowledge Hints: K0", tag="tier_1"), Addition(hint="\nPlanning Hints: P0", tag="tier_2"),
         Addition(hint="\nSolution Hints: S0", tag="tier_3")], []]
    # row 1's empty planning hint is skipped; a custom template and labels
    t = _scaf(exemption_steps=0, labels=["A", "B", "C"], hint_template=" [{label}] {hint}")
    assert [a.hint for a in t.rescue([1], [[0.5, 0.0]])[0]] == [" [A] K1", " [C] S1"]
    assert [a.tag for a in t.rescue([1], [[0.5, 0.0]])[0]] == ["tier_1", "tier_3"]


def test_the_plateau_rule_switches_guidance_on_once_the_pass_rate_stops_improving():
    s = _scaf(exemption_steps=0, patience=2, min_delta=0.1)
    # pass rates 0.5 (best), 0.75 (> 0.5 + 0.1: new best), 0.75 (stale 1), 0.8 (not > 0.85: stale 2)
    rates = [[[1, 0], [1, 0]], [[1, 1], [1, 0]], [[1, 1], [0, 1]], [[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]]
    active = []
    for rewards in rates:
        s.update([0, 1], rewards)
        active.append(s.active)
    assert active == [False, False, False, True]
    assert (s.best, s.stale) == (0.75, 2)
    s.update([0, 1], [[1, 1], [1, 1]])
    assert s.active  # guidance stays on once on


def test_the_lowest_tier_that_solved_it_is_picked():
    s = _scaf(threshold=1.0)
    assert s.rescued([0.0, 1.0, 1.0]) == 1
    assert s.rescued([0.0, 0.9]) is None
    assert _scaf(threshold=0.5).rescued([0.5, 1.0]) == 0


def test_state_round_trips():
    a = _scaf(exemption_steps=0, patience=3)
    for rewards in ([[1, 0], [0, 0]], [[0, 0], [0, 0]]):
        a.update(a.next(2), rewards)
    b = _scaf(exemption_steps=0, patience=3)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict() == {"epoch": 1, "cursor": 2, "steps": 2, "best": 0.25, "stale": 1,
                                                 "active": False}
    for _ in range(3):
        rows = a.next(2)
        assert rows == b.next(2) and a.rescue(rows, [[0.0], [0.0]]) == b.rescue(rows, [[0.0], [0.0]])
        a.update(rows, [[0.0], [0.0]]), b.update(rows, [[0.0], [0.0]])
    assert a.active and b.active


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match=r"sampler.kwargs.columns .* and labels .* same length"):
        _scaf(labels=["only one"])
    with pytest.raises(ValueError, match=r"sampler.kwargs.exemption_steps \(-1\)"):
        _scaf(exemption_steps=-1)
    with pytest.raises(ValueError, match=r"training row 1 has no value in column 'hint_4' \(sampler.kwargs.columns\)"):
        _scaf(columns=["hint_1", "hint_4"], labels=["a", "b"])
    with pytest.raises(ConfigError, match="exemption"):
        resolve(RLConfig, {"sampler": {"name": "scaf_grpo", "kwargs": {"exemption": 5}}})
    with pytest.raises(ConfigError, match="env:"):
        resolve(RLConfig, {"sampler": {"name": "scaf_grpo"}, "env": {"name": "calculator"}})


def test_scaf_grpo_replaces_one_rollout_of_a_failed_group_with_a_hinted_success(tmp_path, monkeypatch):
    """Token parity (a coin flip for the random tiny model) with groups of 2: some groups fail, and a
    hinted try succeeds; its row carries the hinted prompt and its own reward."""
    cfg = tiny_rl_config(tmp_path, **{"sampler": {"name": "scaf_grpo", "kwargs": {"exemption_steps": 1}},
                                      "data.task_kwargs": {"level": 1, "hints": True}, "rollout.n": 2,
                                      "rewards": [{"name": "tiny_rewards:token_parity"}], "train.steps": 3})
    _, seen = train_keeping_batches(monkeypatch, cfg)
    lines = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["hints/rescue_tries"] == 0.0  # the exemption step: no guidance
    assert sum(m["hints/rescued_groups"] for m in lines) >= 1
    rescued = 0
    for p, (idx, batch, result, metrics) in seen:
        tags = batch.metadata.get("hint_tag") or [""] * batch.size
        for i, tag in enumerate(tags):
            if not tag:
                continue
            rescued += 1
            g = int(batch.group_ids[i])
            row = p.train_rows[idx[g]]
            k = int(tag.split("_")[1])
            hint = f"\n{['Knowledge Hints', 'Planning Hints', 'Solution Hints'][k - 1]}: {row.columns[f'hint_{k}']}"
            assert batch.metadata["hint"][i] == hint
            prompt = p.tokenizer.decode(batch.prompt_ids[i][batch.prompt_mask[i].bool()])
            assert prompt == f"<|user|>{row.prompt[0]['content']}{hint}<|assistant|>"
            assert i == batch.group_ids.tolist().index(g)  # the group's first rollout was replaced
            assert result.total[i] == 1.0 and result.total[i + 1] == 0.0  # one success in a failed group
        assert torch.equal(batch.loss_mask, batch.completion_mask.float())
    assert rescued == sum(m["hints/rescued_groups"] for m in lines)
