"""GHPO: the hint schedule, within-step escalation through the refill loop, state, errors, a run."""

import pytest
import torch
from helpers import make_batch, tiny_rl_config, train_keeping_batches

from postrl.config import ConfigError, RLConfig, resolve
from postrl.data.loading import PromptRow
from postrl.rewards import RewardResult
from postrl.samplers import SAMPLERS, Addition
from postrl.samplers.ghpo import GHPO_HINT
from postrl.trainers.collect import Scored, refill


def _rows(answers):
    return [PromptRow(i, [{"role": "user", "content": f"q{i}"}], a, {"answer": a}) for i, a in enumerate(answers)]


def _ghpo(answers, **kw):
    return SAMPLERS["ghpo"](len(answers), 0, rows=_rows(answers), shuffle=False, **kw)


def test_stage_s_reveals_round_of_ratio_times_length_characters():
    s = _ghpo(["0123456789", "abcdefg"])
    # |y*| = 10: round(2.5) = 2, round(5.0) = 5, round(7.5) = 8 (Python rounds half to even)
    assert [s.addition(0, k).hint for k in (1, 2, 3)] == [GHPO_HINT.format(hint=h) for h in ("01", "01234", "01234567")]
    # |y*| = 7: round(1.75) = 2, round(3.5) = 4, round(5.25) = 5
    assert [s.addition(1, k).hint.rsplit("\n", 1)[1] for k in (1, 2, 3)] == ["ab", "abcd", "abcde"]
    assert s.addition(0, 0) == Addition() and s.addition(0, 2).tag == "ratio_0.5"
    prefix = _ghpo(["0123456789"], as_answer_prefix=True).addition(0, 1)
    assert prefix == Addition(hint="", answer_prefix="01", tag="ratio_0.25")
    assert _ghpo(["0123"], hint_template="\nHint: {hint}").addition(0, 2).hint == "\nHint: 01"


def test_a_failed_prompt_climbs_one_stage_per_failure_and_a_solved_one_drops_out():
    s = _ghpo(["aaaa", "bbbb", "cccc", "dddd"])
    assert s.filters_groups and s.decorates and s.max_rounds == 4
    assert s.next(3) == [0, 1, 2] and all(a.empty for a in s.decorate([0, 1, 2]))
    assert s.keep([[0.0, 0.0], [1.0, 0.0], [0.0, 0.5]]) == [False, True, False]  # 0 and 2 never reached 1.0
    assert s.next(2) == [0, 2]
    assert [a.tag for a in s.decorate([0, 2])] == ["ratio_0.25", "ratio_0.25"]
    assert s.keep([[1.0, 0.0], [0.0, 0.0]]) == [True, False]  # 0 solved with a quarter of the answer
    assert s.next(1) == [2] and s.decorate([2])[0].hint.endswith("\ncc")
    assert s.keep([[0.0, 0.0]]) == [False]
    assert s.next(1) == [2] and s.decorate([2])[0].hint.endswith("\nccc")
    assert s.keep([[0.0, 0.0]]) == [True]  # the last stage is trained on, solved or not
    assert s.next(1) == [3] and s.decorate([3]) == [Addition()]  # nothing queued: a fresh unhinted draw
    s.update([0, 1, 2], [[1, 0], [1, 0], [0, 0]])
    assert s.state_dict()["queue"] == [] and s.state_dict()["drawn"] == []
    lenient = _ghpo(["a"], threshold=0.5)
    lenient.next(1)
    assert lenient.keep([[0.0, 0.5]]) == [True]  # 0.5 reaches the threshold: solved


def test_the_refill_loop_runs_the_stages_and_trains_on_each_prompts_last_group():
    s = _ghpo(["11", "22", "33"])
    solves_at = {0: 1, 1: 0, 2: 99}  # prompt -> first stage with a success (2 never)
    stage_of = {}

    def scored(rows):
        adds = s.decorate(rows)
        for r, a in zip(rows, adds):
            stage_of[r] = 0 if a.empty else 1 + [0.25, 0.5, 0.75].index(float(a.tag.split("_")[1]))
        rewards_G = [[1.0, 0.0] if stage_of[r] >= solves_at[r] else [0.0, 0.0] for r in rows]
        total = torch.tensor([x for g in rewards_G for x in g])
        batch = make_batch(total.tolist(), [g for g in range(len(rows)) for _ in range(2)])
        return Scored(list(rows), batch, RewardResult(total, {"r": total.clone()}))

    first = scored(s.next(3))
    asked = []

    def more(k, round_):
        asked.append(k)
        return scored(s.next(k))

    out, info = refill(first, more, s.keep, want=3, max_rounds=s.max_rounds)
    assert asked == [2, 1, 1]  # round 2: prompts 0 and 2 at 1/4; rounds 3, 4: prompt 2 at 1/2, 3/4
    assert info == {"dynamic_sampling/rounds": 4.0, "dynamic_sampling/kept_groups": 3.0,
                    "dynamic_sampling/generated_groups": 7.0}
    assert out.idx == [1, 0, 2] and stage_of == {0: 1, 1: 0, 2: 3}
    assert out.result.total.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_state_round_trips_mid_step_and_across_steps():
    a = SAMPLERS["ghpo"](7, 3, rows=_rows([str(10 * i + 5) for i in range(7)]))
    first = a.next(3)
    a.keep([[0.0], [1.0], [0.0]])
    b = SAMPLERS["ghpo"](7, 3, rows=_rows([str(10 * i + 5) for i in range(7)]))
    b.load_state_dict(a.state_dict())
    assert b.next(2) == a.next(2) == [first[0], first[2]] and b.decorate([first[0], first[2]]) == a.decorate(
        [first[0], first[2]])
    a.update(first, [[0.0]] * 3), b.update(first, [[0.0]] * 3)
    assert [a.next(4) for _ in range(3)] == [b.next(4) for _ in range(3)]


def test_bad_settings_name_the_key_the_row_and_the_fix():
    with pytest.raises(ValueError, match="sampler.kwargs.ratios"):
        _ghpo(["a"], ratios=[0.5, 0.25])
    with pytest.raises(ValueError, match=r"sampler.kwargs.hint_template must contain \{hint\}"):
        _ghpo(["a"], hint_template="no placeholder")
    with pytest.raises(ValueError, match=r"training row 2 has no text in column 'answer' \(sampler.kwargs.column\)"):
        _ghpo(["a", ""])
    with pytest.raises(RuntimeError, match="decorate must follow next"):
        _ghpo(["a", "b"]).decorate([1])
    with pytest.raises(ConfigError, match="ratio"):
        resolve(RLConfig, {"sampler": {"name": "ghpo", "kwargs": {"ratio": [0.5]}}})
    with pytest.raises(ConfigError, match="max_off_policy_steps"):
        resolve(RLConfig, {"sampler": {"name": "ghpo"}, "distributed": {"max_off_policy_steps": 1}})


def test_ghpo_trains_on_hinted_prompts(tmp_path, monkeypatch):
    """A random tiny model fails every prompt: each group ends at the 3/4 hint, in the prompt ids."""
    cfg = tiny_rl_config(tmp_path, **{"sampler": {"name": "ghpo"}, "rewards": [{"name": "exact_match"}]})
    summary, seen = train_keeping_batches(monkeypatch, cfg)
    assert summary["last/dynamic_sampling/rounds"] == 4.0 and summary["last/hints/ghpo/ratio_0.75"] == 1.0
    p, (idx, batch, result, metrics) = seen[-1]
    n = cfg.rollout.n
    for g, row in enumerate(idx):
        answer = p.train_rows[row].answer
        hint = GHPO_HINT.format(hint=answer[:round(len(answer) * 0.75)])
        prompt = p.tokenizer.decode(batch.prompt_ids[g * n][batch.prompt_mask[g * n].bool()])
        assert prompt == f"<|user|>{p.train_rows[row].prompt[0]['content']}{hint}<|assistant|>"
        assert batch.metadata["hint"][g * n] == hint and batch.metadata["answer_prefix"][g * n] == ""
    assert torch.equal(batch.loss_mask, batch.completion_mask.float())  # hints are prompt tokens only
