"""Reward functions: the registry, the built-ins and the weighted set the trainer scores with.

A reward function has TRL's signature, `fn(prompts, completions, **kwargs) -> list[float | None]`,
so a TRL reward function works unchanged. Add a built-in by registering it in `REWARDS`
(`builtin.py`); users point the config at `module:function` or `path/to/file.py:function`.
"""

from postrl.rewards.registry import REWARDS  # noqa: F401
from postrl.rewards import builtin  # noqa: F401  (fills the registry)
from postrl.rewards import reward_model as _reward_model  # noqa: F401  (registers `reward_model`)
from postrl.rewards.process import PROCESS_REWARDS  # noqa: F401
from postrl.rewards import process_models as _process_models  # noqa: F401  (process: prm; reward: prm_score)
from postrl.rewards import process_logratio as _process_logratio  # noqa: F401  (process: implicit_prm, rto)
from postrl.rewards import code_exec as _code_exec  # noqa: F401  (registers `code_tests`)
from postrl.rewards import drm as _drm  # noqa: F401  (drm_relevance, drm_coherence; process: drm, drm_confidence)
from postrl.rewards import text_overlap as _text_overlap  # noqa: F401  (registers `bleu`, `rouge`)
from postrl.rewards import agent_rewards as _agent_rewards  # noqa: F401  (registers `otc`)
from postrl.rewards.combiners import COMBINERS  # noqa: F401  (reward_combine: trust, constraints, consistency)
from postrl.rewards.builtin import completion_text  # noqa: F401
from postrl.rewards.combine import RewardResult, RewardSet, check_rewards, load_reward_fn  # noqa: F401
