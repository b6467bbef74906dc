"""Presets of methods that lean on a loop feature (a greedy baseline, injected references,
dynamic sampling, a KL schedule), written as data like every preset (see `presets.py`).

SALSA has no preset: its one ingredient, `model.reference_soup`, is a list of the user's own
checkpoints, which a preset cannot name (docs/loop_features.md shows the config).
"""

from postrl.algorithms.presets import grpo
from postrl.algorithms.registries import PRESETS


@PRESETS.register("remax", paper="ReMax: A Simple, Effective, and Efficient Reinforcement Learning Method for "
                  "Aligning Large Language Models", arxiv="2310.10505",
                  summary="REINFORCE with a greedy-completion baseline, no critic, no clip; k1 KL 0.05 in the reward")
def remax():
    # Algorithm 1 is plain REINFORCE (no ratio, no clip, one update per batch), so the loss is
    # `reinforce`. The official trainer (github.com/liziniu/ReMax, remax_trainer.py) averages
    # -A log pi over all action tokens (token_mean) and subtracts kl_ctl * (log pi - log pi_ref)
    # per token from the reward (k1 in the reward) with kl_ctl = 0.05 in its training scripts.
    return {"algorithm.advantage": "remax", "algorithm.loss": "reinforce", "algorithm.loss_agg": "token_mean",
            "algorithm.kl_coef": 0.05, "algorithm.kl_estimator": "k1", "algorithm.kl_in_reward": True}


@PRESETS.register("tempsamp", paper="TempSamp-R1: Effective Temporal Sampling with Reinforcement Fine-Tuning for "
                  "Video LLMs", arxiv="2509.18056",
                  summary="GRPO with the reference answer injected into every group and the soft advantage")
def tempsamp():
    # Mixed-policy groups (G - 1 samples + the dataset's reference solution from the `answer`
    # column) with the soft advantage, on the GRPO objective the paper builds on (clip 0.2,
    # k3 KL 0.04, sequence-mean aggregation). Set rollout.inject_reference to another column if
    # the dataset keeps its full solutions elsewhere.
    return {"algorithm.advantage": "tempsamp", "rollout.inject_reference": "answer",
            "algorithm.loss": "ppo_clip", "algorithm.loss_kwargs": {"clip_low": 0.2, "clip_high": 0.2},
            "algorithm.loss_agg": "seq_mean_token_mean", "algorithm.kl_coef": 0.04, "algorithm.kl_estimator": "k3"}


@PRESETS.register("dapo", paper="DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
                  arxiv="2503.14476",
                  summary="clip-higher 0.2/0.28, token mean, no KL, dynamic sampling, overlong reward shaping")
def dapo():
    # Clip-Higher (eps_low 0.2, eps_high 0.28, sec. 3.1), token-level loss (sec. 3.3), no KL term
    # (sec. 2.3), dynamic sampling (sec. 3.2) and the soft overlong punishment (eq. 13), which is
    # appended to the user's rewards ("rewards+"), never replacing them; its L_max is filled from
    # rollout.max_new_tokens. Overlong filtering (algorithm.mask_truncated) is the paper's other
    # option for truncated samples and stays off, as in its final recipe.
    return {"algorithm.advantage": "grpo", "algorithm.loss": "ppo_clip",
            "algorithm.loss_kwargs": {"clip_low": 0.2, "clip_high": 0.28},
            "algorithm.loss_agg": "token_mean", "algorithm.kl_coef": 0.0,
            "sampler.name": "dynamic_sampling", "rewards+": [{"name": "overlong_penalty"}]}


@PRESETS.register("grpo_d", paper="OThink-MR1: Stimulating multimodal generalized reasoning capabilities via "
                  "dynamic reinforcement learning", arxiv="2503.16081",
                  summary="GRPO with a dynamic KL: the coefficient rises linearly from 0 to 0.04 over training")
def grpo_d():
    # GRPO-D: a small KL weight early (exploration) that grows later (exploitation). The paper's
    # exact curve and end points were not retrieved; this is GRPO's preset with its k3 KL 0.04
    # reached linearly from 0 at the last step.
    return {**grpo(), "algorithm.kl_schedule": "linear", "algorithm.kl_coef_start": 0.0}
