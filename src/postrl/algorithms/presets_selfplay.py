"""Presets of the self-play methods for `postrl train` (data, like every preset in `presets.py`)."""

from postrl.algorithms.registries import PRESETS


@PRESETS.register("spo_self_play", paper="A Minimaximalist Approach to Reinforcement Learning from Human "
                  "Feedback (SPO)", arxiv="2401.04056",
                  summary="group win rates as the reward (minus 1/2), PPO clip 0.2, no KL to a reference")
def spo_self_play():
    # SPO hands the win rates to an ordinary RL learner (PPO in its experiments) and uses no KL
    # to a reference: its target is the Minimax winner itself. Clip 0.2 is PPO's default; the
    # sequence-mean aggregation is our choice for LLM completions (the paper's tasks are
    # continuous control, where no aggregation arises).
    return {"algorithm.advantage": "self_play_win_rate", "algorithm.loss": "ppo_clip",
            "algorithm.loss_kwargs": {"clip_low": 0.2, "clip_high": 0.2},
            "algorithm.loss_agg": "seq_mean_token_mean", "algorithm.kl_coef": 0.0}
