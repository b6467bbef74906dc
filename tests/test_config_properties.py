"""Property tests of the config parser (hypothesis): any mapping of real and made-up keys to any
values, and any `--set` strings, either resolve or raise a ConfigError that names a key of the
input; never another exception type."""

import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import BaseModel

from postrl.cli import TRAINERS, config_schema
from postrl.config import ConfigError, RLConfig, parse_overrides, resolve, set_dotted

SCHEMAS = {command: config_schema(command) for command in TRAINERS}


def dotted_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every key path of a schema (sections recursed into, including optional ones)."""
    out = []
    for name, field in model.model_fields.items():
        key = prefix + name
        out.append(key)
        for cls in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(cls, type) and issubclass(cls, BaseModel):
                out += dotted_keys(cls, key + ".")
    return out


def registry_keys() -> list[tuple[str, str, str]]:
    """(name key, name, kwargs key) for each registry parameter: hyper-parameter values of the wrong
    type must reach the registries' own checks and still come out as ConfigErrors."""
    from postrl.algorithms import ADVANTAGES, POLICY_LOSSES
    from postrl.samplers import SAMPLERS

    out = []
    for registry, name_key, kwargs_key in ((ADVANTAGES, "algorithm.advantage", "algorithm.advantage_kwargs"),
                                           (POLICY_LOSSES, "algorithm.loss", "algorithm.loss_kwargs"),
                                           (SAMPLERS, "sampler.name", "sampler.kwargs")):
        for name in registry.names():
            out += [(name_key, name, f"{kwargs_key}.{p}") for p in registry.get(name).defaults]
    return out


KEYS = sorted({k for schema in SCHEMAS.values() for k in dotted_keys(schema)})
REGISTRY_KEYS = registry_keys()
scalars = (st.none() | st.booleans() | st.integers(min_value=-10**20, max_value=10**20)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["grpo", "ppo", "exact_match", "tiny", "auto", "m:f", "[1, 2]", "{a: 1}", "1e400"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6) | st.sampled_from(["name", "weight", "kwargs"]), inner,
                                        max_size=3), max_leaves=8)
NAMED = ["algorithm.preset", "algorithm.advantage", "algorithm.loss", "sampler.name", "rollout.engine", "rewards",
         "reward_combine.name", "length.name", "env.name", "loss.name"]  # registry names: weighted up
keys = st.sampled_from(KEYS) | st.sampled_from(NAMED) | st.text(min_size=1, max_size=12)


def entries():
    """(key, value) pairs: a schema key, a made-up one, or a registry name with one of its parameters."""
    plain = st.tuples(keys, values).map(lambda kv: [kv])
    registry = st.tuples(st.sampled_from(REGISTRY_KEYS), values).map(
        lambda t: [(t[0][0], t[0][1]), (t[0][2], t[1])])
    return st.lists(plain | registry, max_size=5).map(lambda xs: [kv for x in xs for kv in x])


def names_a_key(message: str, keys_given) -> bool:
    return any(k.split(".")[0] in message for k in keys_given)


@settings(max_examples=int(__import__("os").environ.get("N", 300)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(sorted(SCHEMAS)), pairs=entries())
def test_any_mapping_resolves_or_is_a_config_error_naming_a_key(command, pairs):
    raw: dict = {}
    for key, value in pairs:
        try:
            set_dotted(raw, key, value)
        except ConfigError:  # a key under a value that is not a section: --set reports it by name
            pass
    try:
        cfg = resolve(SCHEMAS[command], raw)
    except ConfigError as e:
        assert raw and names_a_key(str(e), raw), str(e)
        return
    for v in _floats(cfg.model_dump()):  # what did resolve holds no NaN or inf
        assert math.isfinite(v)


def _floats(tree):
    if isinstance(tree, float):
        yield tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            if not str(k).endswith("kwargs"):  # registry hyper-parameters are the registries' business
                yield from _floats(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _floats(v)


@settings(max_examples=int(__import__("os").environ.get("N", 300)), deadline=None)
@given(pairs=st.lists(st.text(max_size=30) | st.builds(lambda k, v: f"{k}={v}", keys, st.text(max_size=20)),
                      max_size=5))
def test_any_set_strings_parse_or_are_a_config_error_naming_the_pair(pairs):
    try:
        overrides = parse_overrides(pairs)
    except ConfigError as e:
        assert "--set" in str(e) and any(repr(p) in str(e) for p in pairs), str(e)
        return
    try:
        resolve(RLConfig, {}, overrides)
    except ConfigError as e:
        assert names_a_key(str(e), overrides), str(e)


@pytest.mark.parametrize("raw, match", [
    ({"algorithm": {"preset": ["grpo"]}}, r"algorithm.preset: unknown preset \['grpo'\]"),  # was a TypeError
    ({"algorithm": {"loss_kwargs": {"clip_high": "0.3"}}},
     r"algorithm.loss_kwargs.clip_high = '0.3': policy loss 'ppo_clip' expects a number \(default 0.2\)"),
    ({"sampler": {"name": "dynamic_sampling", "kwargs": {"shuffle": "yes"}}},
     r"sampler.kwargs.shuffle = 'yes': sampler 'dynamic_sampling' expects true or false"),
    ({"train": {"max_grad_norm": float("inf")}}, r"`train.max_grad_norm`: inf: NaN and inf are not allowed"),
    ({"algorithm": {"success_threshold": float("nan")}}, r"`algorithm.success_threshold`: nan: NaN and inf"),
    ({"rewards": [{"name": "exact_match", "weight": float("nan")}]}, r"`rewards.0.weight` = nan: .*finite"),
    ({"rewards": [{"name": "exact_match", "clip": [0, float("inf")]}]}, r"`rewards.0.clip`: \(0.0, inf\): NaN and inf"),
])
def test_bad_values_the_audit_found_are_config_errors_naming_the_key(raw, match):
    """Before issue 8 these were a TypeError, or accepted and failed (or misbehaved) mid-run."""
    with pytest.raises(ConfigError, match=match):
        resolve(RLConfig, raw)
