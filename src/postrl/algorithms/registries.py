"""The algorithm registries (kept apart so families can import them without cycles)."""

from postrl.registry import Registry

ADVANTAGES = Registry("advantage estimator")
"""name -> fn(batch: RolloutBatch, **hparams) -> advantages [B, T] (zero on masked tokens).

needs: "state" (called as fn(batch, state, **hparams): `state` is a dict the estimator may read
and update, kept across steps and saved in checkpoints, so it must hold JSON-serialisable data);
"values" (a learned value model, `learner/critic.py`, is trained alongside the policy: the trainer
fills `batch.values` [B, T] and `batch.last_values` [B] before the call, and the estimator must
leave the critic's targets in `batch.returns` [B, T], optionally restricted by `batch.value_mask`);
"critic_replay" (with "values": the critic is trained OFF-policy by `learner/critic_replay.py` instead
of on the batch's `returns`: turn transitions go to a replay buffer, TD targets come from a soft-updated
target critic; the estimator must take `gamma` and `mode` ("qv" | "td") kwargs, which set the TD rule);
"greedy_rewards" (ReMax's baseline: after scoring, the trainer generates one greedy completion
per prompt of the step with the rollout engine (greedy, n=1, the rollout's max_new_tokens and
stop strings), scores it with the configured reward functions, and writes its total reward to
`batch.metadata["greedy_reward"]`, a list of floats with one entry per row (the greedy reward of
that row's prompt); synchronous rollouts only, distributed.max_off_policy_steps = 0);
"mc_values" (Monte-Carlo values of states inside the completions: after scoring, the trainer runs
`algorithms/segment_mc.estimate_segment_values`, which picks segment starts from the estimator's
resolved `threshold`, `cutpoint_interval` and `max_segments`, samples `mc_samples` continuations
of each prefix with the rollout engine, scores them with the configured reward functions, and
writes per-row lists to `batch.metadata["segment_cuts"]` (completion positions b) and
`["segment_values"]` (V of the state prompt + completion[:b]); synchronous rollouts only);
"step_rewards" (the estimator assigns credit from process step rewards: `process_rewards` must be
configured; the trainer fills `batch.step_rewards` and `batch.metadata["step_ends"]` and does not add
the step-giving process rewards to `batch.token_rewards`, see trainers/process_scoring.py);
"turns" (multi-turn credit assignment, `algorithms/agent_steps.py`: the estimator reads the agent
layout of the issue-6 rollout when present: concat rows with `turn_ids`, `step_rewards` and
metadata "episode_id" / "turn_state_keys", or per_turn rows with `step_ids`, `state_keys` and
metadata "episode_id" / "episode_return"; on a plain single-turn batch every completion is one
turn, so the entry still runs);
"answer_logprobs" (IGPO: before the call the trainer runs the learner's policy under no_grad and writes
`batch.metadata["answer_logprob_per_turn"]`, per row a list whose entry k is the mean log-prob of
the dataset row's `answer` tokens given the context before turn k, `advantages_igpo.py`; the
estimator's `answer_prefix` and `micro_batch` kwargs configure that forward)."""

POLICY_LOSSES = Registry("policy loss")
"""name -> fn(inputs: LossInputs, **hparams) -> LossOutput(per-token loss [B, T], metrics).

needs: "groups" (the loss compares the completions of one prompt: every micro-batch holds whole
groups, and `inputs.group_ids` / `inputs.rewards` are set); "reference" (reference log-probs
are computed even when `kl_coef` is 0); "entropy_grad" (`inputs.entropy` carries gradient even
when `entropy_coef` is 0); "vocab_mean" (the forward also returns mean_v log pi(v|s_t) at every
completion position: `inputs.vocab_mean` with gradient, and `inputs.old_vocab_mean` under the old
policy, computed once per batch together with the old log-probs, or the detached current one when
the batch is used once on-policy; not available with `algorithm.old_logprobs: behavior`);
"alt_context" (every row carries a second prompt for the same completion in
`batch.metadata["alt_prompt_ids"]`, a token-id list per row, e.g. HCPO's compressed history: the
learner runs one more forward with that prompt and passes `inputs.alt_logprobs` with gradient and
`inputs.old_alt_logprobs` under the old policy when the old log-probs are recomputed, else None)."""

PRESETS = Registry("preset")
"""name -> fn() -> dict of dotted config keys: a bundle of registry choices, as data.

A key is filled only when the user did not set it. A top-level key ending in "+" (e.g.
`"rewards+": [{"name": "overlong_penalty"}]`) appends its items to that list instead (the
user's list, else the default), skipping items whose `name` is already there: a preset can add
to a list but never replaces it."""

PREFERENCE_LOSSES = Registry("preference loss")
"""name -> fn(inputs: PrefInputs, **hparams) -> LossOutput(per-example loss [B], metrics).

Offline and online preference objectives (`algorithms/preference.py`). needs: "reference"
(reference log-probs of the responses; a loss without it is reference-free and no reference
model is loaded), "token_logps" (per-token log-probs and masks, not only sums), "kto_kl" (the
KTO reference point: policy and reference log-probs of mismatched prompt/response pairs in
`kl_logps` / `kl_ref_logps`), "online_kl" (HyPO: per example one response sampled from the current
policy for its prompt; `kl_logps` is its policy log-prob WITH gradient, `kl_ref_logps` its reference
log-prob), "margins" (MODPO: `margins` [B], the other objective's reward of the chosen minus that of
the rejected response, e.g. a dataset column or a frozen reward model's scores), "rationales" (the
rows carry a rationale r; `rationale_logps` [B] = log pi_theta(r | x, y_w, y_l) summed over its
tokens, with gradient). Online / self-play words (`preference_online.py`; the full procedure is in
docs/online_preference.md): "win_prob" (`chosen_win_prob` [B], the judge's P(chosen beats
rejected)), "win_rates" (K >= 2 policy samples per prompt, every pair judged; `chosen_win_rate` /
`rejected_win_rate` [B] = mean P(y beats y_j) over the other samples, chosen/rejected the highest
and lowest), "reference_sample" (the pair is one policy and one reference sample, judge-ordered;
`ref_sample_logps` [B] = the policy log-prob of the reference sample, WITH gradient),
"mixture_opponent" (`chosen_*` is the policy's own sample y, `rejected_*` an opponent sampled from
pi^(1-m) pi_ref^m by `rollout/mixture.py`, m the entry's `mixture_coef`; not reordered by the judge),
"previous_iterate" (`chosen_prev_logps` / `rejected_prev_logps` [B] under a frozen policy snapshot
pi_t, refreshed every `iteration_steps` optimizer steps), "prox_opponent" (Nash-MP: chosen is the own
sample, the opponent is the anchor pi_k for `prox_steps` steps then the half-step snapshot for
`prox_steps` steps, after which the anchor moves to the policy; `chosen_prev_logps` under pi_k)."""
