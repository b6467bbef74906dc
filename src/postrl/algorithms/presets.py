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


# ---------------------------------------------------------------- GRPO-family losses, no KL
# These papers train without a KL term or reference model (GSPO sec. 5, MiniMax-M1 sec. 3, SAPO,
# DCPO, BAPO, GTPO, the Entropy Mechanism paper's DAPO-based runs); each bundle is its loss on
# group-normalised advantages with the aggregation the paper uses.
def _critic_free(advantage: str, loss: str, agg: str, **loss_kwargs) -> dict:
    out = {"algorithm.advantage": advantage, "algorithm.loss": loss, "algorithm.loss_agg": agg,
           "algorithm.kl_coef": 0.0}
    if loss_kwargs:
        out["algorithm.loss_kwargs"] = loss_kwargs
    return out


@PRESETS.register("gspo", paper="Group Sequence Policy Optimization", arxiv="2507.18071",
                  summary="sequence-level (geometric-mean) ratio clipped at 3e-4/4e-4, sequence mean, no KL")
def gspo():
    return _critic_free("grpo", "gspo", "seq_mean_token_mean")


@PRESETS.register("cispo", paper="MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning Attention",
                  arxiv="2506.13585", summary="clipped, detached IS weight on REINFORCE; token mean, no KL")
def cispo():
    return _critic_free("grpo", "cispo", "token_mean")


@PRESETS.register("sapo", paper="Soft Adaptive Policy Optimization", arxiv="2511.20347",
                  summary="soft sigmoid gate on the ratio (tau_pos 1.0, tau_neg 1.05), sequence mean, no KL")
def sapo():
    return _critic_free("grpo", "sapo", "seq_mean_token_mean")


@PRESETS.register("dcpo", paper="DCPO: Dynamic Clipping Policy Optimization", arxiv="2509.02333",
                  summary="probability-dependent clip bounds (0.2/0.28), token mean (the paper's OTM), no KL")
def dcpo():
    return _critic_free("grpo", "dcpo", "token_mean")


@PRESETS.register("bapo", paper="BAPO: Stabilizing Off-Policy Reinforcement Learning for LLMs via Balanced "
                  "Policy Optimization with Adaptive Clipping", arxiv="2510.18927",
                  summary="batch-adaptive clip bounds reaching a positive-token share of 0.5; token mean, no KL")
def bapo():
    return _critic_free("grpo", "bapo", "token_mean")


@PRESETS.register("gtpo", paper="GTPO: Trajectory-Based Policy Optimization in Large Language Models",
                  arxiv="2508.03772", summary="conflict-token protection and entropy filter; no KL, no reference")
def gtpo():
    return _critic_free("grpo", "gtpo", "seq_mean_token_mean")


@PRESETS.register("clip_cov", paper="The Entropy Mechanism of Reinforcement Learning for Reasoning Language "
                  "Models", arxiv="2505.22617", summary="detach gradients of high-covariance tokens; token mean")
def clip_cov():
    return _critic_free("grpo", "clip_cov", "token_mean")


@PRESETS.register("kl_cov", paper="The Entropy Mechanism of Reinforcement Learning for Reasoning Language "
                  "Models", arxiv="2505.22617", summary="KL penalty on the top-covariance tokens; token mean")
def kl_cov():
    return _critic_free("grpo", "kl_cov", "token_mean")


@PRESETS.register("topr", paper="Tapered Off-Policy REINFORCE: Stable and efficient reinforcement learning "
                  "for LLMs", arxiv="2503.14286",
                  summary="REINFORCE, positives at weight 1, negatives tapered by clip(pi/mu, 0, 1); no KL")
def topr():
    # {0, 1} verifier rewards: a completion is positive when correct (threshold 0.5). The mean
    # baseline (Dr. GRPO's advantage) gives positives A > 0 and negatives A < 0, as R = +-1 does.
    return _critic_free("dr_grpo", "topr", "token_mean", threshold=0.5)


# ------------------------------------------------------------ other advantages, same PPO loss
@PRESETS.register("bnpo", paper="BNPO: Beta Normalization Policy Optimization", arxiv="2506.02864",
                  summary="Beta-density normalised advantages for binary rewards, PPO clip 0.2, token mean")
def bnpo():
    return _critic_free("bnpo", "ppo_clip", "token_mean", clip_low=0.2, clip_high=0.2)


@PRESETS.register("lite_ppo", paper="Part I: Tricks or Traps? A Deep Dive into RL for LLM Reasoning",
                  arxiv="2508.08221",
                  summary="group-mean / batch-std advantages, vanilla PPO clip 0.2, token-level mean, no KL")
def lite_ppo():
    # Lite PPO's loss is the plain PPO surrogate: it is ppo_clip here, not a separate entry
    return _critic_free("lite_ppo", "ppo_clip", "token_mean", clip_low=0.2, clip_high=0.2)


# ---------------------------------------------------------- losses that read the whole group
@PRESETS.register("pacs", paper="PACS: Implicit Actor Critic Coupling via a Supervised Learning Framework "
                  "for RLVR", arxiv="2509.02522",
                  summary="BCE of the leave-one-out implicit reward against the verifier label; sequence mean")
def pacs():
    # pacs needs the reference (its implicit reward is beta log pi/pi_ref), not a KL term
    return _critic_free("grpo", "pacs", "seq_mean_token_mean")


@PRESETS.register("nft", paper="Bridging Supervised Learning and Reinforcement Learning in Math Reasoning",
                  arxiv="2505.18116", summary="negative-aware fine-tuning: likelihood on positives, implicit "
                  "negative policy on negatives; token mean")
def nft():
    return _critic_free("grpo", "nft", "token_mean")
