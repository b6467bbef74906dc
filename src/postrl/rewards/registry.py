"""The reward registry (apart from the built-ins so user modules can import it cheaply)."""

from postrl.registry import Registry

REWARDS = Registry("reward")
"""name -> fn(prompts, completions, **columns_and_hparams) -> list[float | None] (TRL's signature).

needs: "max_new_tokens" (the reward's `max_tokens` hyper-parameter, when the config leaves it
unset, is filled with `rollout.max_new_tokens` as the config is resolved); "policy_tokenizer"
(the reward's `policy_tokenizer` hyper-parameter, when unset, is filled with the policy's
`model.tokenizer` or `model.name_or_path`); "column" (the reward reads the dataset column named by
its `column` hyper-parameter: `postrl train` checks the training rows have it before the first
rollout, `text_overlap.check_reward_columns`); "tool_calls" (the reward receives each completion's
episode tool-call count, the multi-turn rollout's `metadata["tool_calls"]`, as the keyword column
`tool_calls`; see rewards/agent_rewards.py)."""
