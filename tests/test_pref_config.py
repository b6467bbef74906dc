"""PrefConfig: defaults, and errors that name the key, the value and the fix."""

import pytest

from postrl.algorithms import PREFERENCE_LOSSES
from postrl.algorithms.policy_losses import LossOutput
from postrl.config import ConfigError, PrefConfig, load_config, resolve
from postrl.registry import Entry


def err(raw: dict) -> str:
    with pytest.raises(ConfigError) as e:
        resolve(PrefConfig, raw)
    return str(e.value)


def register(monkeypatch, name, needs):
    fn = lambda inp: LossOutput(-inp.chosen_logps + inp.rejected_logps)  # noqa: E731
    monkeypatch.setitem(PREFERENCE_LOSSES._entries, name, Entry(name, fn, "test", None, "test loss", {}, needs))


def test_defaults_train_dpo_on_the_built_in_pairs():
    cfg = resolve(PrefConfig, {})
    assert (cfg.loss.name, cfg.data.source, cfg.needs_reference) == ("dpo", "task:arithmetic_pairs", True)
    assert cfg.data.columns.chosen == "chosen" and cfg.train.max_length == 1024 and cfg.train.steps is None


def test_unknown_loss_lists_the_valid_names():
    msg = err({"loss": {"name": "dpoo"}})
    assert "loss.name: unknown preference loss 'dpoo' (did you mean 'dpo'?); valid names: " in msg


def test_unknown_loss_parameter_lists_the_parameters():
    assert "loss.kwargs: preference loss 'dpo' takes no parameter 'bta'; its parameters are: beta" in \
        err({"loss": {"kwargs": {"bta": 0.1}}})


def test_data_format_must_fit_the_loss_for_built_in_tasks():
    msg = err({"data": {"source": "task:arithmetic_unpaired"}})
    assert "holds unpaired rows, but loss.name='dpo' trains on paired data" in msg


def test_needs_the_offline_trainer_cannot_provide(monkeypatch):
    register(monkeypatch, "test_online", ("reference", "test_unprovided"))
    assert "loss.name='test_online' needs 'test_unprovided', which offline `postrl pref` does not provide" in \
        err({"loss": {"name": "test_online"}})


def test_reference_settings_with_a_reference_free_loss(monkeypatch):
    register(monkeypatch, "test_free", ())
    assert "model.ref_model / reference_soup is set but loss.name='test_free' is reference-free" in \
        err({"loss": {"name": "test_free"}, "model": {"ref_model": "x"}})


def test_other_errors():
    assert "unknown key `train.lrr` (did you mean 'lr'?)" in err({"train": {"lrr": 1}})
    assert "eval.reward: unknown reward 'exact'" in err({"eval": {"reward": "exact"}})
    assert "train.packing and train.prefix_sharing" in err({"train": {"packing": True, "prefix_sharing": True}})
    assert "data.answer_pattern is not used by preference data" in err({"data": {"answer_pattern": "x"}})
    assert "`data.long_rows` = 'drop'" in err({"data": {"long_rows": "drop"}})


def test_yaml_and_set_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss: {name: dpo, kwargs: {beta: 0.5}}\ntrain: {steps: 3}\n")
    cfg = load_config(path, ["loss.kwargs.beta=0.2", "data.identical_pairs=skip"], schema=PrefConfig)
    assert cfg.loss.kwargs == {"beta": 0.2} and cfg.train.steps == 3 and cfg.data.identical_pairs == "skip"
