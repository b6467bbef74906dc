"""Presets of methods whose credit comes from state values without a critic: ROVER (the policy
read as the uniform random policy's Q-function) and SPO-chain (Monte-Carlo values of prefix
states). Data only, like every preset (see `presets.py`)."""

from postrl.algorithms.registries import PRESETS


@PRESETS.register("rover", paper="Random Policy Valuation is Enough for LLM Reasoning with Verifiable Rewards",
                  arxiv="2509.24981", summary="group-mean-centred reward on every token, ROVER Q-regression loss "
                  "(rho 1), token mean, no KL, no reference, no critic")
def rover():
    # eq. 4: mean-centred rewards without std scaling, i.e. dr_grpo (the Countdown code's
    # compute_rover_reward; the math script runs adv_estimator=grpo with std scaling instead);
    # rho = rover_t = 1.0; the official loss is a masked token mean; use_kl_loss=False.
    return {"algorithm.advantage": "dr_grpo", "algorithm.loss": "rover",
            "algorithm.loss_kwargs": {"rho": 1.0, "next_q_coef": 1.0},
            "algorithm.loss_agg": "token_mean", "algorithm.kl_coef": 0.0, "algorithm.entropy_coef": 0.0}


@PRESETS.register("segment_spo", paper="Segment Policy Optimization: Effective Segment-Level Credit Assignment in "
                  "RL for Large Language Models", arxiv="2505.23564",
                  summary="SPO-chain (int5): Monte-Carlo segment advantages on low-probability tokens, PPO clip "
                  "0.2, k3 KL 1e-4 in the loss")
def segment_spo():
    # App. H, SPO-chain (int5): cutpoint interval 5, 9 MC samples and mask threshold 0.9 are
    # segment_spo's defaults; initial KL coef 1e-4. The paper's sampling (temperature 0.6, top-p 0.9)
    # and 2 epochs per batch are run settings, left to the user.
    return {"algorithm.advantage": "segment_spo", "algorithm.loss": "ppo_clip",
            "algorithm.loss_kwargs": {"clip_low": 0.2, "clip_high": 0.2},
            "algorithm.loss_agg": "token_mean", "algorithm.kl_coef": 0.0001,
            "algorithm.kl_estimator": "k3", "algorithm.kl_in_reward": False}
