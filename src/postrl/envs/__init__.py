"""Environments for multi-turn (agent) RL: the `Env` protocol, the `ENVS` registry, `load_env`.

`base.py` owns the protocol and loading; built-in envs register themselves in `ENVS` from
their own modules (imported here so `postrl.envs.ENVS` lists them all).
"""

from postrl.envs.base import ENVS, Env, StepResult, check_env_class, load_env
from postrl.envs import calculator, python_tool  # noqa: F401,E402  (register the tool envs and tools)
from postrl.envs import games, search  # noqa: F401,E402  (register gridworld, search and its tool)

__all__ = ["ENVS", "Env", "StepResult", "check_env_class", "load_env"]
