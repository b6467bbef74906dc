"""`postrl online` configuration errors (trainers/online_config.py): each names the key and the fix."""

import pytest

from postrl.config import ConfigError, resolve
from postrl.trainers.online_config import OnlineConfig


def cfg(**sections):
    raw = {"rollout": {"n": 4}}
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return resolve(OnlineConfig, raw, source="test config")


def test_defaults_are_online_dpo_with_exact_match():
    c = cfg()
    assert (c.online.pair_rule, c.loss.name, c.rewards[0].name, c.online.reference) == \
        ("best_worst", "dpo", "exact_match", "initial")


def test_a_rule_comparing_samples_needs_two_of_them():
    with pytest.raises(ConfigError, match="compares samples of the policy, which needs rollout.n >= 2 \\(got 1\\)"):
        cfg(rollout={"n": 1})
    # spin compares each sample with the gold response: one sample is the paper's setting
    assert cfg(rollout={"n": 1}, online={"pair_rule": "spin", "gold_column": "answer"}).rollout.n == 1


def test_spin_and_dno_without_the_gold_column_name_the_key_and_the_fix():
    for rule in ("spin", "dno"):
        with pytest.raises(ConfigError, match="online.gold_column is not set.*online.gold_column: answer"):
            cfg(online={"pair_rule": rule})
    with pytest.raises(ConfigError, match="online.gold_column is set but"):
        cfg(online={"gold_column": "answer"})


def test_delta_needs_both_models_and_others_reject_them():
    with pytest.raises(ConfigError, match="set both online.strong_model and online.weak_model"):
        cfg(online={"pair_rule": "delta", "strong_model": {"name_or_path": "tiny"}})
    with pytest.raises(ConfigError, match="online.strong_model / weak_model are set but"):
        cfg(online={"strong_model": {"name_or_path": "tiny"}})


def test_judge_pair_needs_an_even_group_and_an_unused_judge_is_an_error():
    with pytest.raises(ConfigError, match="rollout.n must be even \\(got 3\\)"):
        cfg(rollout={"n": 3}, online={"pair_rule": "judge_pair"})
    with pytest.raises(ConfigError, match="online.judge is set but neither"):
        cfg(online={"judge": {"name": "reward_model", "kwargs": {"path": "rm"}}})
    with pytest.raises(ConfigError, match="use `reward_model`"):
        cfg(online={"pair_rule": "judge_pair", "judge": {"name": "nope"}})


def test_unknown_rule_and_rule_kwargs_list_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown pair rule 'best_wors' \\(did you mean 'best_worst'\\?\\)"):
        cfg(online={"pair_rule": "best_wors"})
    with pytest.raises(ConfigError, match="takes no parameter 'temperature'; its parameters are: beta, num_accepted"):
        cfg(online={"pair_rule": "rso", "pair_kwargs": {"temperature": 1.0}})


def test_losses_that_do_not_train_on_pairs_or_need_what_online_lacks_are_errors():
    with pytest.raises(ConfigError, match="'kto' needs 'kto_kl', which `postrl online` does not provide"):
        cfg(loss={"name": "kto"})
    with pytest.raises(ConfigError, match="'modpo' needs 'margins'"):
        cfg(loss={"name": "modpo"})
    with pytest.raises(ConfigError, match="'lipo' does not train on \\(chosen, rejected\\) pairs"):
        cfg(loss={"name": "lipo"})


def test_iteration_settings_that_do_not_fit():
    with pytest.raises(ConfigError, match="momentum=0.3 is APO's extrapolation.*online.reference: previous_iterate"):
        cfg(online={"momentum": 0.3, "iterations": 2})
    with pytest.raises(ConfigError, match="set online.iterations >= 2 or momentum: 0"):
        cfg(online={"momentum": 0.3, "reference": "previous_iterate"})
    with pytest.raises(ConfigError, match="loss.name='simpo' reads none"):
        cfg(loss={"name": "simpo"}, online={"reference": "previous_iterate"})
    with pytest.raises(ConfigError, match="only for full models"):
        cfg(model={"lora": {"enabled": True}}, online={"reference": "previous_iterate"})
    with pytest.raises(ConfigError, match="online.momentum"):
        cfg(online={"momentum": 1.0})  # alpha must be < 1


def test_unknown_keys_are_rejected_with_the_allowed_ones():
    with pytest.raises(ConfigError, match="unknown key `online.pairs_rule` \\(did you mean 'pair_rule'\\?\\)"):
        cfg(online={"pairs_rule": "spin"})


def test_cli_table_and_parser_run_online():
    from postrl.cli import TRAINERS, build_parser, config_schema

    assert TRAINERS["online"] == ("postrl.trainers.online_config:OnlineConfig", "online_pref")
    assert config_schema("online") is OnlineConfig
    args = build_parser().parse_args(["online", "c.yaml", "--resume", "--set", "online.pair_rule=spin"])
    assert args.command == "online" and args.resume and args.set == ["online.pair_rule=spin"]


def test_cli_reports_a_bad_online_config_in_one_line_with_status_2(tmp_path, capsys):
    from pathlib import Path

    from postrl.cli import main

    example = Path(__file__).resolve().parents[2] / "examples" / "tiny_online_dpo.yaml"
    assert main(["online", str(example), "--set", "rollout.n=1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "needs rollout.n >= 2 (got 1)" in err
