"""MPO's pair selection (data/pair_select.py): margins from a column or a reward model, the cut by
threshold or quantile, the written prompt files and the errors, by hand."""

import json

import pytest
import torch

from postrl.config import ConfigError, PairSelect, PrefConfig, resolve
from postrl.data import pair_select
from postrl.data.loading import DataError
from postrl.data.preference import PreferenceRow
from postrl.data.preference_tasks import arithmetic_pairs


def pairs(margins):
    return [PreferenceRow([{"role": "user", "content": f"{i}+1="}], chosen=str(i + 1), rejected=str(i + 1 + int(m)),
                          columns={"answer": str(i + 1), "margin": m}, index=i) for i, m in enumerate(margins)]


class Data:
    def __init__(self, **select):
        from postrl.config import PrefColumns

        self.select, self.columns = PairSelect(**select), PrefColumns()


def test_cut_by_threshold_or_by_a_quantile_of_the_margins():
    margins = [1.0, 2.0, 10.0, 11.0]
    assert pair_select.cut(margins, threshold=5.0, quantile=None) == 5.0
    # sorted margins at positions 0..3; the q-quantile sits at position q * 3 (linear interpolation):
    # q = 0.5 -> 1.5 -> (2 + 10) / 2 = 6;  q = 0.25 -> 0.75 -> 1 + 0.75 * (2 - 1) = 1.75
    assert pair_select.cut(margins, threshold=None, quantile=0.5) == pytest.approx(6.0)
    assert pair_select.cut(margins, threshold=None, quantile=0.25) == pytest.approx(1.75)


def test_easy_pairs_are_kept_and_both_parts_prompts_are_written(tmp_path):
    rows = pairs([1.0, 10.0, 2.0, 11.0])
    kept, facts = pair_select.select_pairs(rows, Data(keep="easy", quantile=0.5), tmp_path, "d")
    # cut = 6: easy = margins 10 and 11 (rows 1, 3), hard = 1 and 2 (rows 0, 2)
    assert [r.index for r in kept] == [1, 3]
    assert facts == {"select_threshold": pytest.approx(6.0), "select_easy": 2, "select_hard": 2}
    hard = [json.loads(x) for x in (tmp_path / "select" / "hard_prompts.jsonl").read_text().splitlines()]
    assert hard == [{"prompt": [{"role": "user", "content": "0+1="}], "answer": "1", "margin": 1.0},
                    {"prompt": [{"role": "user", "content": "2+1="}], "answer": "3", "margin": 2.0}]
    kept, _ = pair_select.select_pairs(rows, Data(keep="hard", threshold=2.0), tmp_path, "d")
    assert [r.index for r in kept] == [0]  # a margin equal to the threshold is easy


def test_margins_from_a_reward_model(tmp_path, monkeypatch):
    class FakeRM:  # r(x, y) = the response's length
        def score_responses(self, prompts, responses):
            return torch.tensor([float(len(r)) for r in responses])

    monkeypatch.setattr("postrl.rewards.reward_model.load_cached", lambda path, *a: FakeRM())
    rows = [PreferenceRow("p", chosen="long answer", rejected="short", index=0),
            PreferenceRow("p", chosen="ab", rejected="abcd", index=1)]
    # margins: 11 - 5 = 6 and 2 - 4 = -2
    assert pair_select.pair_margins(rows, PairSelect(reward="rm", threshold=0), "margin", "d") == [6.0, -2.0]


def test_errors_name_the_column_the_setting_and_the_fix(tmp_path):
    rows = pairs([1.0, 2.0])
    rows[1].columns.pop("margin")
    with pytest.raises(DataError, match="row 2 of d: column 'margin' is missing; .*data.select.reward"):
        pair_select.select_pairs(rows, Data(threshold=1.0), tmp_path, "d")
    with pytest.raises(DataError, match=r"keeps the easy pairs \(margin >= 5\) but there are none \(margins from 1 "
                                        r"to 2\)"):
        pair_select.select_pairs(pairs([1.0, 2.0]), Data(threshold=5.0), tmp_path, "d")
    unpaired = [PreferenceRow("p", chosen="a", label=True, columns={"margin": 1.0})]
    with pytest.raises(DataError, match="rows are unpaired"):
        pair_select.select_pairs(unpaired, Data(threshold=0.0), tmp_path, "d")
    for bad in ({"keep": "easy"}, {"threshold": 1.0, "quantile": 0.5}):
        with pytest.raises(ConfigError, match="exactly one of threshold .* or quantile"):
            resolve(PrefConfig, {"data": {"select": bad}})


def test_the_built_in_pairs_margin_is_the_closeness_reward_gap():
    rows = arithmetic_pairs("train", level=2, limit=50, margin=True)
    assert all(r["margin"] == abs(int(r["rejected"]) - int(r["answer"])) for r in rows)
    assert {r["margin"] for r in rows} <= {1.0, 2.0, 10.0, 11.0}
    assert "margin" not in arithmetic_pairs("train", limit=1)[0]  # only when asked
