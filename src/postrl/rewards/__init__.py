"""Reward functions: the registry, the built-ins and the weighted set the trainer scores with.

A reward function has TRL's signature, `fn(prompts, completions, **kwargs) -> list[float | None]`,
so a TRL reward function works unchanged. Add a built-in by registering it in `REWARDS`
(`builtin.py`); users point the config at `module:function` or `path/to/file.py:function`.
"""

from postrl.rewards.registry import REWARDS  # noqa: F401
from postrl.rewards import builtin  # noqa: F401  (fills the registry)
from postrl.rewards import reward_model as _reward_model  # noqa: F401  (registers `reward_model`)
from postrl.rewards.builtin import completion_text  # noqa: F401
from postrl.rewards.combine import RewardResult, RewardSet, check_rewards, load_reward_fn  # noqa: F401
