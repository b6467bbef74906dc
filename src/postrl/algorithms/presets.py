"""Presets: named bundles of registry choices and hyper-parameters, written as data.

A preset is a sparse set of dotted config keys; it fills only keys the user did not set, so
`--set algorithm.kl_coef=0` on top of `preset: grpo` wins. Adding a preset adds no code path.
"""

from postrl.algorithms.registries import PRESETS


@PRESETS.register("grpo", paper="DeepSeekMath", arxiv="2402.03300",
                  summary="group-normalised advantages, PPO clip 0.2, seq-mean-token-mean, k3 KL 0.04 in loss")
def grpo():
    return {"algorithm.advantage": "grpo", "algorithm.loss": "ppo_clip",
            "algorithm.loss_kwargs": {"clip_low": 0.2, "clip_high": 0.2},
            "algorithm.loss_agg": "seq_mean_token_mean", "algorithm.kl_coef": 0.04,
            "algorithm.kl_estimator": "k3", "algorithm.kl_in_reward": False}


@PRESETS.register("dr_grpo", paper="Understanding R1-Zero-Like Training: A Critical Perspective",
                  arxiv="2503.20783", summary="mean-centred advantages, constant length normaliser, no KL")
def dr_grpo():
    return {"algorithm.advantage": "dr_grpo", "algorithm.loss": "ppo_clip",
            "algorithm.loss_kwargs": {"clip_low": 0.2, "clip_high": 0.2},
            "algorithm.loss_agg": "seq_mean_token_sum_norm", "algorithm.kl_coef": 0.0}


@PRESETS.register("rloo", paper="Back to Basics: Revisiting REINFORCE Style Optimization for Learning "
                  "from Human Feedback in LLMs", arxiv="2402.14740",
                  summary="leave-one-out baseline, sequence-level REINFORCE, k1 KL 0.05 in the reward")
def rloo():
    return {"algorithm.advantage": "rloo", "algorithm.loss": "reinforce",
            "algorithm.loss_agg": "seq_mean_token_sum_norm", "algorithm.kl_coef": 0.05,
            "algorithm.kl_estimator": "k1", "algorithm.kl_in_reward": True}


@PRESETS.register("reinforce_pp", paper="REINFORCE++: An Efficient RLHF Algorithm with Robustness to "
                  "Both Prompt and Reward Models", arxiv="2501.03262",
                  summary="token returns with k1 KL 0.01 in the reward, global whitening, PPO clip 0.2")
def reinforce_pp():
    return {"algorithm.advantage": "reinforce_pp", "algorithm.loss": "ppo_clip",
            "algorithm.loss_kwargs": {"clip_low": 0.2, "clip_high": 0.2},
            "algorithm.loss_agg": "token_mean", "algorithm.kl_coef": 0.01,
            "algorithm.kl_estimator": "k1", "algorithm.kl_in_reward": True}


@PRESETS.register("ppo", paper="Proximal Policy Optimization Algorithms", arxiv="1707.06347",
                  summary="learned critic + GAE (gamma 1, lambda 0.95, whitened), PPO clip 0.2, k1 KL 0.05 in reward")
def ppo():
    # RLHF-style PPO (Ziegler et al. 2019; TRL's PPOConfig): per-token KL penalty in the reward with
    # kl_coef 0.05 (TRL's default and "The N+ Implementation Details of RLHF with PPO", 2403.17031;
    # OpenRLHF uses 0.01, verl 0.001). The critic is enabled by the estimator ("gae" needs "values");
    # gae's own defaults (gamma 1, lambda 0.95, whitening) are the preset's, so they are not repeated.
    return {"algorithm.advantage": "gae",
            "algorithm.loss": "ppo_clip", "algorithm.loss_kwargs": {"clip_low": 0.2, "clip_high": 0.2},
            "algorithm.loss_agg": "token_mean", "algorithm.kl_coef": 0.05,
            "algorithm.kl_estimator": "k1", "algorithm.kl_in_reward": True}


@PRESETS.register("t_ppo", paper="Truncated Proximal Policy Optimization", arxiv="2506.15050",
                  summary="ppo with extended GAE: length-truncated responses bootstrap from the critic")
def t_ppo():
    # t_ppo's defaults: policy lambda 0.95, critic targets with lambda 1 on finished responses only
    return {**ppo(), "algorithm.advantage": "t_ppo"}
