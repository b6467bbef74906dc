"""SALSA's reference soup: the average of tiny models' weights, and errors that name the parameter."""

import pytest
import torch
from helpers import TINY_MODEL

from postrl.config import ConfigError, ModelSection, RLConfig, resolve
from postrl.learner.models import load_model, load_reference, load_tokenizer
from postrl.learner.soup import soup_state_dict
from postrl.learner.tiny import build_model


def _tiny(tok, **change):
    return build_model(tok, **{**ModelSection(**TINY_MODEL).tiny.model_dump(), **change}).state_dict()


def test_soup_of_two_tiny_models_is_the_average_of_their_state_dicts():
    cfg = ModelSection(**TINY_MODEL, reference_soup=["tiny", {"init_seed": 1}])
    tok = load_tokenizer(cfg)
    policy = load_model(cfg, tok, torch.device("cpu"))
    ref = load_reference(cfg, policy, tok, torch.device("cpu"))
    a, b = _tiny(tok), _tiny(tok, init_seed=1)
    assert not torch.equal(a["lm_head.weight"], b["lm_head.weight"])
    for key, value in ref.state_dict().items():
        assert torch.allclose(value, (a[key] + b[key]) / 2), key
    assert not any(p.requires_grad for p in ref.parameters()) and not ref.training


def test_soup_weights_are_normalised():
    tok = load_tokenizer(ModelSection(**TINY_MODEL))
    a, b = _tiny(tok), _tiny(tok, init_seed=1)
    soup = soup_state_dict([a, b], [3.0, 1.0])  # -> 0.75 a + 0.25 b
    key = "model.layers.0.mlp.up_proj.weight"
    assert torch.allclose(soup[key], 0.75 * a[key] + 0.25 * b[key])


def test_models_of_different_shapes_or_depths_name_the_mismatching_parameter():
    tok = load_tokenizer(ModelSection(**TINY_MODEL))
    a = _tiny(tok)
    wider = _tiny(tok, intermediate_size=128)
    with pytest.raises(ValueError, match=r"model.layers.0.mlp.\w+_proj.weight' has shape"):
        soup_state_dict([a, wider], names=["a", "wider"])
    deeper = _tiny(tok, num_layers=3)
    with pytest.raises(ValueError, match="'model.layers.2.* is in only one"):
        soup_state_dict([a, deeper])


def test_soup_config_errors_say_what_to_change():
    with pytest.raises(ConfigError, match="at least two"):
        resolve(RLConfig, {"model": {"reference_soup": ["tiny"]}, "algorithm": {"kl_coef": 0.1}})
    with pytest.raises(ConfigError, match="keep one"):
        resolve(RLConfig, {"model": {"reference_soup": ["tiny", "tiny"], "ref_model": "x"},
                           "algorithm": {"kl_coef": 0.1}})
    with pytest.raises(ConfigError, match="one positive weight per model"):
        resolve(RLConfig, {"model": {"reference_soup": ["tiny", "tiny"], "reference_soup_weights": [1.0]},
                           "algorithm": {"kl_coef": 0.1}})
    with pytest.raises(ConfigError, match="reference_soup\\[1\\].*allowed keys"):
        resolve(RLConfig, {"model": {"reference_soup": ["tiny", {"hidden": 3}]}, "algorithm": {"kl_coef": 0.1}})
    with pytest.raises(ConfigError, match="nothing uses one"):
        resolve(RLConfig, {"model": {"reference_soup": ["tiny", {"init_seed": 1}]}})
