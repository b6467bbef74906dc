"""`postrl train` with an environment: the pieces `trainers/rl.py` swaps in when `env` is set.

- `episode_engine`: wraps the token engine in `EpisodeEngine`, whose `generate` takes dataset
  rows and plays episodes (rollout/multiturn.py), so the rollout pipeline, evaluation, dynamic
  sampling refills and greedy baselines all run episodes unchanged;
- `EpisodeRewards`: the reward of an episode = env return + the configured reward functions
  scored on the final transcript (the rows of one episode are scored once);
- `env_metrics`: env/success, env/turns, env/tool_calls, env/timeouts, env/max_tokens, env/return (per episode),
  env/branched (ARPO), env/history_len (history policies that report it, HCPO);
- `build_replay`: ARPO's success replay (trainers/arpo_replay.py) when `env.replay` (or, without env,
  the top-level `replay`) is set;
- `check_config`: settings that cannot work with episodes, refused with the fix.
"""

from __future__ import annotations

import torch

from postrl.rewards.combine import RewardResult
from postrl.rollout.multiturn import EpisodeEngine, Limits


def env_factory(cfg):
    from postrl.envs import load_env

    return load_env(cfg.env.name, cfg.env.kwargs)


def limits(cfg, env_class=None) -> Limits:
    e = cfg.env
    max_turns = e.max_turns or getattr(env_class, "max_turns", None) or 8
    return Limits(layout=e.layout, max_turns=int(max_turns), max_total_tokens=e.max_total_tokens,
                  turn_timeout_s=e.turn_timeout_s, episode_timeout_s=e.episode_timeout_s)


def episode_engine(cfg, engine, tokenizer) -> EpisodeEngine:
    make = env_factory(cfg)
    arpo = None if cfg.env.arpo is None else {"total": cfg.rollout.n, **cfg.env.arpo.model_dump()}
    return EpisodeEngine(engine, make, tokenizer, limits(cfg, make.env_class), history=cfg.env.history,
                         history_k=cfg.env.history_k, history_kwargs=cfg.env.history_kwargs,
                         plain=True if cfg.data.chat_template == "never" else None,
                         system_prompt=cfg.data.system_prompt, arpo=arpo)


def build_replay(cfg):
    from postrl.trainers.arpo_replay import build_replay

    return build_replay(cfg)  # env.replay (episodes), or the top-level replay (single completions)


class EpisodeRewards:
    """RewardSet-like: `names[0]` is "env_success" (so `accuracy` = the env's success rate),
    then "env_return" and the outcome functions; `total` = env return + weighted outcome rewards."""

    def __init__(self, outcome=None):
        self.outcome = outcome
        self.names = ["env_success", "env_return", *(outcome.names if outcome is not None else [])]

    def __call__(self, prompts, completions, completion_ids, columns) -> RewardResult:
        missing = [k for k in ("episode_return", "episode_success", "episode_id") if k not in columns]
        if missing:
            raise ValueError(f"EpisodeRewards scores episode batches (rollout/multiturn.py); columns {missing} are missing")
        cols = dict(columns)
        ret = torch.tensor(cols.pop("episode_return"), dtype=torch.float32)
        success = torch.tensor([float(s) for s in cols.pop("episode_success")])
        ids = cols.pop("episode_id")
        transcripts, transcript_ids = cols.pop("transcript"), cols.pop("transcript_ids")
        per_function = {"env_success": success, "env_return": ret}
        total, failed = ret.clone(), None
        if self.outcome is not None:
            first: dict[int, int] = {}
            for b, e in enumerate(ids):
                first.setdefault(e, b)
            rows = list(first.values())  # one scoring per episode (per_turn has a row per turn)
            out = self.outcome([prompts[b] for b in rows],
                               [_like(completions[b], transcripts[b]) for b in rows],
                               [transcript_ids[b] for b in rows], {k: [v[b] for b in rows] for k, v in cols.items()})
            at = torch.tensor([rows.index(first[e]) for e in ids])
            total = total + out.total[at]
            per_function.update({k: v[at] for k, v in out.per_function.items()})
            failed = out.failed[at] if out.failed is not None else None  # on_error: skip_group
        return RewardResult(total=total, per_function=per_function, failed=failed)


def _like(completion, text: str):
    """The transcript in the completion's format (chat messages for conversational data)."""
    return [{"role": "assistant", "content": text}] if isinstance(completion, list) else text


def episode_rows(batch) -> list[int]:
    """The first row of every episode (all rows in concat; turn 0 rows in per_turn)."""
    seen, rows = set(), []
    for b, e in enumerate(batch.metadata["episode_id"]):
        if e not in seen:
            seen.add(e)
            rows.append(b)
    return rows


def env_metrics(batch) -> dict[str, float]:
    m, rows = batch.metadata, episode_rows(batch)
    n = max(len(rows), 1)
    return {"env/success": sum(float(m["success"][b]) for b in rows) / n,
            "env/turns": sum(m["num_turns"][b] for b in rows) / n,
            "env/tool_calls": sum(m["tool_calls"][b] for b in rows) / n,
            "env/timeouts": float(sum(m["finish_reason"][b] == "timeout" for b in rows)),
            # share of episodes ended by env.max_total_tokens: a tool call that ran but whose result did
            # not fit leaves env/turns at 1 with env/tool_calls > 0; this says why
            "env/max_tokens": sum(m["finish_reason"][b] == "max_tokens" for b in rows) / n,
            "env/return": sum(m["episode_return"][b] for b in rows) / n,
            # ARPO: the share of episodes that branched off another; HCPO: past turns shown (per_turn rows)
            **({"env/branched": sum(m["branch_parent"][b] >= 0 for b in rows) / n} if "branch_parent" in m else {}),
            **({"env/history_len": _mean(m["history_len"])} if "history_len" in m else {})}


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / max(len(values), 1)


def check_config(cfg) -> None:
    """Settings that cannot work with episodes; each error names the key and the fix."""
    from postrl import algorithms
    from postrl.rollout.history import HISTORIES  # (also registers HCPO's policy, rollout/history_hcpo.py)

    e, a, d = cfg.env, cfg.algorithm, cfg.distributed
    env_factory(cfg)  # an unknown env, a bad path or a bad kwarg fails here, before any model loads
    if e.history not in HISTORIES:
        raise ValueError(f"env.history={e.history!r} is not a history policy; valid: {', '.join(HISTORIES.names())}")
    # compared with the defaults, not model_fields_set: a dumped config.yaml (resume) lists every key
    if e.layout == "concat" and (e.history != "full" or e.history_k != 2 or e.history_kwargs):
        raise ValueError("env.history / env.history_k / env.history_kwargs choose the context of per_turn rows; the "
                         "concat layout trains on the full history. Set env.layout: per_turn, or drop them")
    HISTORIES.check_kwargs(e.history, e.history_kwargs, "env.history_kwargs")
    estimator = algorithms.ADVANTAGES.get(a.advantage)
    refused = []
    if d.backend != "local":
        refused.append((f"distributed.backend={d.backend!r}", "env rollouts run in the trainer process; use backend: local"))
    if cfg.rollout.inject_reference is not None:
        refused.append(("rollout.inject_reference", "a reference solution is not an episode; drop it"))
    if cfg.process_rewards:
        refused.append(("process_rewards", "step rewards come from the env (StepResult.reward); drop process_rewards"))
    if "mc_values" in estimator.needs:
        refused.append((f"algorithm.advantage={a.advantage!r}", "it re-samples continuations of token prefixes, which "
                        "would skip the env; use an episode-level estimator (grpo, rloo, ...)"))
    from postrl.rewards.shaping import is_plain

    if not is_plain(cfg):
        refused.append(("reward shaping (rewards[].normalize/clip, reward_combine)",
                        "the env return is added to the rewards unshaped; drop the shaping settings"))
    if "alt_context" in algorithms.POLICY_LOSSES.get(a.loss).needs:
        policy = HISTORIES.get(e.history)
        off = {**policy.defaults, **e.history_kwargs}.get("compress") is False  # a policy's switch for its alt branch
        if e.layout != "per_turn" or "alt_context" not in policy.needs or off:
            raise ValueError(f"algorithm.loss={a.loss!r} trains on a second (compressed) context per turn, which only "
                             f"a history policy that returns one provides; the config has env.layout={e.layout!r}, "
                             f"env.history={e.history!r}" + (", env.history_kwargs.compress=false" if off else "") +
                             ": set env.layout: per_turn and env.history: hcpo (with compress left on)")
    if e.arpo is not None:
        if e.arpo.initial > cfg.rollout.n:
            raise ValueError(f"env.arpo.initial={e.arpo.initial} is more than rollout.n={cfg.rollout.n} (the total "
                             "episodes per prompt, initial + branches); lower env.arpo.initial or raise rollout.n")
        if cfg.rollout.engine != "hf":
            refused.append((f"env.arpo with rollout.engine={cfg.rollout.engine!r}", "branching reads per-token "
                            "entropies, which only the hf engine returns; use rollout.engine: hf or drop env.arpo"))
    if e.layout == "per_turn":
        if "greedy_rewards" in estimator.needs:
            refused.append((f"algorithm.advantage={a.advantage!r} with env.layout=per_turn",
                            "the greedy baseline is per episode; use env.layout: concat"))
        if "groups" in algorithms.POLICY_LOSSES.get(a.loss).needs:
            refused.append((f"algorithm.loss={a.loss!r} with env.layout=per_turn",
                            "per_turn rows of a group vary in number, so micro-batches cannot hold whole groups; "
                            "use env.layout: concat"))
        if d.learner_procs > 1:
            refused.append(("distributed.learner_procs > 1 with env.layout=per_turn",
                            "the number of rows varies per step; use env.layout: concat or one learner process"))
        if cfg.needs_critic:
            refused.append((f"algorithm.advantage={a.advantage!r} with env.layout=per_turn",
                            "a critic needs one row per trajectory; use env.layout: concat"))
    if refused:
        what, fix = refused[0]
        raise ValueError(f"env is set (multi-turn episodes), which does not work with {what}: {fix}")
