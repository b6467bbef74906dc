"""Presets of the multi-turn agent credit-assignment methods (`advantages_agent.py`,
`advantages_archer.py`). Data only, like every preset (see `presets.py`). On single-turn batches
each completion is one turn, so these presets also train ordinary tasks (GRPO-like, or a
terminal one-step actor-critic for ArCHer)."""

from postrl.algorithms.registries import PRESETS


@PRESETS.register("gigpo", paper="Group-in-Group Policy Optimization for LLM Agent Training", arxiv="2505.10978",
                  summary="GiGPO advantages (omega 1, gamma 0.95), PPO clip 0.2, token mean, KL 0.01 in the loss")
def gigpo():
    # sec. 5 / verl-agent: GRPO-style clipped objective with a KL loss (beta 0.01) and token-mean
    # aggregation (eq. 9); omega and gamma are the estimator's defaults.
    return {"algorithm.advantage": "gigpo", "algorithm.loss": "ppo_clip",
            "algorithm.loss_kwargs": {"clip_low": 0.2, "clip_high": 0.2}, "algorithm.loss_agg": "token_mean",
            "algorithm.kl_coef": 0.01, "algorithm.kl_estimator": "k3", "algorithm.kl_in_reward": False}


@PRESETS.register("flow_grpo", paper="In-the-Flow Agentic System Optimization for Effective Planning and Tool Use",
                  arxiv="2510.05592", summary="episode outcome broadcast to every turn, PPO clip 0.2, mean of "
                  "per-row token means, KL 0.001 in the loss")
def flow_grpo():
    # eq. 5: token mean within a turn, mean over turns and trajectories (per_turn rows: seq_mean_token_mean);
    # KL coefficient 0.001 as the AgentFlow training config (not confirmed from the paper's text).
    return {"algorithm.advantage": "flow_grpo", "algorithm.loss": "ppo_clip",
            "algorithm.loss_kwargs": {"clip_low": 0.2, "clip_high": 0.2}, "algorithm.loss_agg": "seq_mean_token_mean",
            "algorithm.kl_coef": 0.001, "algorithm.kl_estimator": "k3", "algorithm.kl_in_reward": False}


@PRESETS.register("archer", paper="ArCHer: Training Language Model Agents via Hierarchical Multi-Turn RL",
                  arxiv="2402.19446", summary="off-policy turn-level critic (Q/V at turn boundaries, gamma 0.95, "
                  "replay buffer 10k, target tau 0.1, 20 critic-only warm-up steps) driving a token-level PPO "
                  "actor; no KL")
def archer():
    # The official actor is REINFORCE on the utterance advantage (its PPO clip is commented out);
    # ppo_clip equals it on the first update of a batch and bounds later epochs. No KL term.
    # Critic (official scripts/config/default.yaml): plain MSE (no value clipping), critic_lr 1e-5
    # (= critic.lr's default), warmup_iter 20 iterations without policy updates; replay capacity
    # and tau are the critic section's defaults (10000, 0.1).
    return {"algorithm.advantage": "archer", "algorithm.loss": "ppo_clip",
            "algorithm.loss_kwargs": {"clip_low": 0.2, "clip_high": 0.2}, "algorithm.loss_agg": "token_mean",
            "algorithm.kl_coef": 0.0, "algorithm.entropy_coef": 0.0,
            "critic.vf_clip": None, "critic.policy_freeze_steps": 20}
