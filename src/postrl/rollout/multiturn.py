"""Multi-turn rollout: many env episodes advanced together, token-in-token-out.

`run_episodes` plays n episodes per dataset row. Every turn, ONE `engine.generate` call samples
the next action of every live episode (rows ordered by episode id, the call seeded by (seed,
turn)), then all env steps run concurrently (`env_calls.py`: threads for `step`, one event loop
for `astep`), each under its deadline. The tokens kept are exactly the sampled ones (an EOS or
stop token included); observation tokens come from `ChatRenderer` as a suffix of the rendered
conversation and are never trained on.

An episode ends with finish_reason
  "done"       the env said done,
  "max_turns"  `max_turns` actions were taken (the last observation is not appended),
  "max_tokens" prompt + actions + observations would exceed `max_total_tokens` (an action is
               cut to the budget, and a cut action is not sent to the env),
  "timeout"    a step missed `turn_timeout_s`, or the episode ran past `episode_timeout_s`: the
               episode ends there, the timed-out turn's reward is 0 (earlier rewards stand).

Layouts (see docs/agents.md and the RolloutBatch fields):
  concat    one row per episode: completion = a_1 o_1 a_2 o_2 ... a_K; loss_mask 1 on actions only;
            turn_ids[t] = k on action k and the observation after it, -1 on padding.
  per_turn  one row per (episode, turn): prompt = the history policy's context (`HISTORIES`),
            completion = that action; step_ids = turn index; state_keys = state before the turn.

ARPO (`arpo=ArpoRollout(...)`, rollout/arpo.py): each row starts with `initial` episodes instead of
`params.n`; after an action that follows a tool-call turn, the mean entropy of its first k tokens
(from the engine: `generate(..., entropy=True)`) is compared with the episode's first action's,
and a positive decision forks up to `beam` new episodes from the state before that action (a
fresh env reset with the parent's seed and stepped through the parent's recorded actions, its
turn records copied: the prefix tokens are the parent's). When every episode of a row has ended
with budget left, whole episodes fill it, so every row ends with exactly `params.n` episodes
(ids (first_index + prompt) * n + j as usual, j in creation order). Extra metadata:
"branch_parent" (the parent's episode id, -1 for a root), "branch_turn" (turns copied from it),
"turn_entropy" (per turn, the mean token entropy of the action).

Reproducibility: an env's seed is keyed by (seed, episode id) and the turn-t sampling call by
(seed, t), episode id = (first_index + prompt) * n + sample. The rows of a call keep a fixed
order, so results depend on the step's rows and seed, not on the engine's micro-batch size, on
sharding the prompts (first_index), or on how long env steps take (a timeout aside).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch

from postrl.rollout.arpo import ArpoRollout
from postrl.rollout.batch import RolloutBatch, pad_rows
from postrl.rollout.chat_turns import ChatRenderer
from postrl.rollout.engines import SamplingParams
from postrl.rollout.env_calls import TIMED_OUT, call_all, has_astep
from postrl.rollout.history import HISTORIES, HistoryInput, TurnRecord
from postrl.rollout.sampling import row_seed

EPISODE_COLUMNS = ("episode_return", "episode_success", "episode_id", "transcript", "transcript_ids", "tool_calls")
"""Per-row metadata handed to reward functions as columns (trainers/scoring.py)."""

FINISH_REASONS = ("done", "max_turns", "max_tokens", "timeout")


@dataclass
class Limits:
    layout: str = "concat"
    max_turns: int = 8
    max_total_tokens: int = 2048
    """prompt + every action and observation of the episode."""
    turn_timeout_s: float | None = 30.0
    episode_timeout_s: float | None = None

    def __post_init__(self):
        if self.layout not in ("concat", "per_turn"):
            raise ValueError(f"layout must be 'concat' or 'per_turn', got {self.layout!r}")
        if self.max_turns < 1 or self.max_total_tokens < 2:
            raise ValueError(f"max_turns >= 1 and max_total_tokens >= 2 needed, got {self.max_turns}, "
                             f"{self.max_total_tokens}")


@dataclass
class Episode:
    id: int
    group: int
    row: Any
    env: Any
    renderer: ChatRenderer
    prompt_ids: list[int] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    turns: list[TurnRecord] = field(default_factory=list)
    finish: str | None = None
    info: dict = field(default_factory=dict)
    """The last StepResult.info."""
    env_done: bool = False
    started: float = 0.0
    state_key: str = ""
    env_seed: int = 0
    parent: int = -1
    """ARPO: the episode this one branched from (-1: a root)."""
    branch_turn: int = 0
    """ARPO: the number of turns copied from the parent."""

    @property
    def total_tokens(self) -> int:
        return len(self.prompt_ids) + sum(len(t.action_ids) + len(t.observation_ids) for t in self.turns)

    @property
    def episode_return(self) -> float:
        return float(sum(t.reward for t in self.turns))

    @property
    def success(self) -> bool:
        """info["success"] of the last step when the env reports it, else done with a positive return."""
        if "success" in self.info:
            return bool(self.info["success"])
        return self.finish == "done" and self.episode_return > 0


def run_episodes(engine, env_factory: Callable[[], Any], rows: Sequence, tokenizer, params: SamplingParams,
                 limits: Limits, seed: int, *, first_index: int = 0, renderer: Callable[[Any], ChatRenderer] | None = None,
                 history: str = "full", history_k: int = 2, history_kwargs: dict | None = None,
                 progress: float = 0.0, arpo: ArpoRollout | None = None) -> RolloutBatch:
    """`params.n` episodes per row of `rows` (dataset rows), as a `RolloutBatch` in `limits.layout`.

    `renderer(env) -> ChatRenderer` makes the renderer of an episode (default: from the tokenizer
    and the env's optional `tools` / `system_prompt` attributes). `history` (a `HISTORIES` name,
    `history_k` its k, `history_kwargs` its other hyper-parameters) builds per_turn contexts; the
    concat layout is always the full history. `progress` (step / steps) is passed to the policy.
    `arpo`: entropy-based adaptive rollout with `arpo.total == params.n` episodes per row (module doc).
    """
    make_renderer = renderer or (lambda env: ChatRenderer(tokenizer, tools=getattr(env, "tools", ()) or (),
                                                          system_prompt=getattr(env, "system_prompt", None)))
    history_fn = HISTORIES[history]
    history_kwargs = {**({"k": history_k} if "k" in HISTORIES.get(history).defaults else {}), **(history_kwargs or {})}
    eos_ids = _eos_ids(engine, tokenizer)
    if arpo is not None and arpo.total != params.n:
        raise ValueError(f"ARPO's total rollouts per prompt ({arpo.total}) must equal rollout.n ({params.n})")
    budgets = [arpo.budget() for _ in rows] if arpo is not None else None
    created = [arpo.initial if arpo is not None else params.n for _ in rows]  # next sample index j per row

    def new_episode(i: int, j: int, **kw) -> Episode:
        env, eid = env_factory(), (first_index + i) * params.n + j
        return Episode(id=eid, group=i, row=rows[i], env=env, renderer=make_renderer(env),
                       env_seed=env_seed(seed, eid), **kw)

    def grow(active: list[Episode], forks: list[Episode]) -> list[Episode]:
        """ARPO: add this turn's branches, and whole episodes for rows whose paths all ended with
        budget left; the live episodes in id order."""
        ended = [i for i in range(len(rows)) if budgets[i].remaining and not any(e.group == i for e in active + forks)]
        fresh = [new_episode(i, created[i] + k) for i in ended for k in range(budgets[i].supplement())]
        for i in ended:
            created[i] = params.n
        _replay_prefixes(forks, limits)
        _reset_all(fresh, limits)
        episodes.extend(forks + fresh)
        return sorted(active + forks + fresh, key=lambda e: e.id)

    episodes = [new_episode(i, j) for i in range(len(rows)) for j in range(created[i])]
    _reset_all(episodes, limits)
    max_turns = limits.max_turns
    active = [e for e in episodes if e.finish is None]
    turn = 0
    while active:
        now = time.monotonic()
        for e in active:  # finish what cannot take another turn
            if limits.episode_timeout_s is not None and now - e.started >= limits.episode_timeout_s:
                e.finish = "timeout"
            elif e.total_tokens >= limits.max_total_tokens:
                e.finish = "max_tokens"
        active = [e for e in active if e.finish is None]
        if not active:
            active = grow([], []) if arpo is not None else []
            if not active:
                break
            continue
        contexts = [_context(e, limits, history_fn, history_kwargs, seed, progress) for e in active]
        budget = [limits.max_total_tokens - e.total_tokens for e in active]
        call = replace(params, n=1, max_new_tokens=max(1, min(params.max_new_tokens, max(budget))))
        extra = {"entropy": True} if arpo is not None else {}
        out = engine.generate(contexts, call, _turn_seed(seed, turn), first_index=first_index * params.n, **extra)
        entropies = out.metadata.get("token_entropy") if arpo is not None else None
        if arpo is not None and entropies is None:
            raise ValueError(f"ARPO branching needs per-token entropies; the {type(engine).__name__} engine does not "
                             "return them (use rollout.engine: hf)")
        actions = []
        for r, (e, ctx) in enumerate(zip(active, contexts)):
            keep = out.completion_mask[r].bool()
            ids = out.completion_ids[r][keep].tolist()
            logps = out.behavior_logprobs[r][keep].tolist()
            cut = len(ids) > budget[r]
            ids, logps = ids[:budget[r]], logps[:budget[r]]
            text = tokenizer.decode(ids, skip_special_tokens=True)
            e.turns.append(TurnRecord(context_ids=list(ctx), action_ids=ids, action_logps=logps, action_text=text,
                                      state_key=e.state_key, alt_context_ids=getattr(ctx, "alt_ids", None),
                                      history_info=dict(getattr(ctx, "info", None) or {}),
                                      token_entropy=None if entropies is None else list(entropies[r][:len(ids)])))
            e.messages.append({"role": "assistant", "content": text})
            if cut:
                e.finish = "max_tokens"
            actions.append(None if cut else text)
        forks = _branch(active, arpo, budgets, created, new_episode) if arpo is not None else []
        stepping = [(e, a) for e, a in zip(active, actions) if a is not None]
        _step_all(stepping, limits, turn)
        for e, _ in stepping:
            if e.finish is not None:
                continue
            rec = e.turns[-1]
            if e.env_done:
                e.finish = "done"
            elif len(e.turns) >= max_turns:
                e.finish = "max_turns"
            else:
                last = rec.action_ids[-1] if rec.action_ids else None
                ended = tokenizer.decode([last]) if last in eos_ids else None
                role = getattr(e.env, "observation_role", "user")
                obs_ids = e.renderer.observation_ids(role, rec.observation or "", action_ended_with=ended)
                if e.total_tokens + len(obs_ids) + 1 > limits.max_total_tokens:
                    e.finish = "max_tokens"  # no room for the observation and one more token
                else:
                    rec.observation_ids = obs_ids
                    e.messages.append({"role": e.renderer.role(role), "content": rec.observation or ""})
        active = [e for e in active if e.finish is None]
        if arpo is not None:  # branches join now; rows whose paths all ended get whole episodes
            active = grow(active, forks)
        turn += 1
    if arpo is not None:
        episodes.sort(key=lambda e: e.id)  # group-major, as without branching
    return _assemble(episodes, limits, tokenizer)


def _turn_seed(seed: int, turn: int) -> int:
    """The sampling seed of turn `turn`: turn 0 uses `seed` itself, so a one-turn episode samples
    exactly what single-turn generation would."""
    return seed if turn == 0 else row_seed(seed, 0x7E57, turn) % 2**62


def env_seed(seed: int, episode_id: int) -> int:
    """The seed given to `env.reset` of episode `episode_id` under step seed `seed`."""
    return row_seed(seed, episode_id, 0xE5) % 2**31


def _eos_ids(engine, tokenizer) -> set[int]:
    ids = getattr(engine, "eos_ids", None)
    found = set(ids.tolist() if isinstance(ids, torch.Tensor) else (ids or []))
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return found


def _branch(active: list[Episode], arpo: ArpoRollout, budgets, created: list[int], new_episode) -> list[Episode]:
    """ARPO's decision after each action that follows a tool-call turn: the forks to start, each a
    copy of its parent before that action (turn records copied; env replayed by `_replay_prefixes`)."""
    forks = []
    for e in active:  # episode order: decisions (and the ids they take) are reproducible
        t = len(e.turns) - 1
        if t < 1 or e.turns[t - 1].tool_calls <= 0 or not budgets[e.group].remaining:
            continue
        if not arpo.branch(e.turns[t].token_entropy, e.turns[0].token_entropy):
            continue
        for _ in range(budgets[e.group].take()):
            fork = new_episode(e.group, created[e.group], parent=e.id, branch_turn=t)
            created[e.group] += 1
            fork.env_seed = e.env_seed  # the same env start as the parent
            fork.prompt_ids, fork.messages = list(e.prompt_ids), [dict(m) for m in e.messages[:-1]]
            fork.turns = [replace(r, context_ids=list(r.context_ids), action_ids=list(r.action_ids),
                                  action_logps=list(r.action_logps), observation_ids=list(r.observation_ids),
                                  info=dict(r.info), history_info=dict(r.history_info),
                                  token_entropy=None if r.token_entropy is None else list(r.token_entropy))
                          for r in e.turns[:t]]
            forks.append(fork)
    return forks


def _replay_prefixes(forks: list[Episode], limits: Limits) -> None:
    """Bring each fork's fresh env to its parent's state: reset with the parent's seed, then step
    the recorded actions (all forks together, one turn at a time). The env must answer as it did
    for the parent; anything else is an error (branching needs reset(row, seed) + the same
    actions to reproduce the same episode)."""
    if not forks:
        return
    recorded = [[(t.observation, t.reward) for t in f.turns] for f in forks]
    first = {id(f): (list(f.prompt_ids), f.messages) for f in forks}
    _reset_all(forks, limits)
    for f in forks:
        if f.prompt_ids != first[id(f)][0]:
            raise RuntimeError(f"ARPO branch of episode {f.parent}: env {type(f.env).__qualname__}.reset gave another "
                               "first observation for the same row and seed; branching needs a reset that depends "
                               "only on (row, seed)")
        f.prompt_ids, f.messages = first[id(f)]
    turns = [f.turns for f in forks]
    for k in range(max(len(t) for t in turns)):
        stepping = [(f, f.turns[k].action_text) for f in forks if k < len(f.turns)]
        saved = {id(f): f.turns for f, _ in stepping}
        for f, _ in stepping:  # _step_all writes into turns[-1]: step on a scratch record
            f.turns = f.turns[:k] + [replace(f.turns[k], info={})]
        _step_all(stepping, limits, k)
        for f, _ in stepping:
            got, f.turns = f.turns[k], saved[id(f)]
            if f.finish == "timeout":
                raise TimeoutError(f"ARPO branch of episode {f.parent}: replaying turn {k} took longer than "
                                   f"env.turn_timeout_s={limits.turn_timeout_s}")
            want = recorded[forks.index(f)][k]
            if (got.observation, got.reward) != want or f.env_done:
                raise RuntimeError(f"ARPO branch of episode {f.parent}: replaying turn {k} on env "
                                   f"{type(f.env).__qualname__} gave observation {got.observation!r} / reward "
                                   f"{got.reward} (done={f.env_done}), the parent got {want[0]!r} / {want[1]}; "
                                   "branching needs an env whose steps depend only on (row, seed, actions)")
    for f in forks:
        f.started = time.monotonic()


def _reset_all(episodes: list[Episode], limits: Limits) -> None:
    results = call_all([((lambda e=e: e.env.reset(e.row, e.env_seed)), None) for e in episodes],
                       [limits.turn_timeout_s] * len(episodes))
    for e, first in zip(episodes, results):
        where = f"env {type(e.env).__qualname__} reset on dataset row {getattr(e.row, 'index', '?')}"
        if first is TIMED_OUT:
            raise TimeoutError(f"{where} took longer than env.turn_timeout_s={limits.turn_timeout_s}; "
                               "raise turn_timeout_s or make reset faster")
        if isinstance(first, BaseException):
            raise RuntimeError(f"{where} failed: {type(first).__name__}: {first}") from first
        e.messages = e.renderer.first_messages(first)
        e.prompt_ids = e.renderer.first_ids(first)
        e.started = time.monotonic()
        e.state_key = _state_key(e.env)


def _step_all(stepping: list[tuple[Episode, str]], limits: Limits, turn: int) -> None:
    """Step every env on its action, concurrently, each under min(turn timeout, episode time left)."""
    from postrl.envs.base import StepResult

    now = time.monotonic()
    timeouts = []
    for e, _ in stepping:
        left = None if limits.episode_timeout_s is None else max(0.0, e.started + limits.episode_timeout_s - now)
        t = [x for x in (limits.turn_timeout_s, left) if x is not None]
        timeouts.append(min(t) if t else None)
    calls = [((None, lambda e=e, a=a: e.env.astep(a)) if has_astep(e.env) else ((lambda e=e, a=a: e.env.step(a)), None))
             for e, a in stepping]
    for (e, _), res in zip(stepping, call_all(calls, timeouts)):
        rec = e.turns[-1]
        if res is TIMED_OUT:
            e.finish = "timeout"
            continue
        where = f"env {type(e.env).__qualname__} step (dataset row {getattr(e.row, 'index', '?')}, turn {turn})"
        if isinstance(res, BaseException):
            raise RuntimeError(f"{where} failed: {type(res).__name__}: {res}") from res
        if not isinstance(res, StepResult):
            raise TypeError(f"{where} returned {type(res).__name__}; return postrl.envs.StepResult(observation, "
                            "reward, done, info)")
        try:
            rec.reward = float(res.reward)
        except (TypeError, ValueError):
            raise TypeError(f"{where} returned reward {res.reward!r}; give a float") from None
        rec.observation = res.observation
        rec.info = dict(res.info or {})
        rec.tool_calls = int(rec.info.get("tool_calls", 0) or 0)
        e.info, e.env_done = rec.info, bool(res.done)
        e.state_key = _state_key(e.env)


def _state_key(env) -> str:
    fn = getattr(env, "state_key", None)
    return str(fn()) if callable(fn) else ""


def _context(e: Episode, limits: Limits, history_fn, history_kwargs: dict, seed: int, progress: float):
    """The next turn's prompt ids (a list that may carry `.alt_ids` / `.info` from the history policy)."""
    if limits.layout == "concat":
        return e.prompt_ids + [tok for t in e.turns for tok in t.action_ids + t.observation_ids]
    rng = random.Random(row_seed(seed, e.id, len(e.turns)))
    return history_fn(HistoryInput(e.prompt_ids, e.turns, rng, e.renderer, progress, list(e.messages)),
                      **history_kwargs)


# --------------------------------------------------------------------------------- the batch
def _assemble(episodes: list[Episode], limits: Limits, tokenizer) -> RolloutBatch:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    meta: dict[str, list] = {k: [] for k in ("episode_id", "num_turns", "turn_ends", "turn_state_keys", "tool_calls",
                                             "tool_calls_per_turn", "success", "finish_reason", "episode_return",
                                             "episode_success", "turn_rewards", "transcript", "transcript_ids",
                                             "env_info")}
    if limits.layout == "per_turn":
        meta["turn_index"] = []
    branching = any(e.parent >= 0 for e in episodes) or any(t.token_entropy is not None for e in episodes for t in e.turns)
    if branching:
        meta.update(branch_parent=[], branch_turn=[], turn_entropy=[])
    prompts, completions, loss, logps, turn_ids, groups, step_rewards, step_ids, state_keys = ([] for _ in range(9))
    for e in episodes:
        transcript_ids = [tok for t in e.turns for tok in t.action_ids + t.observation_ids]
        ends, pos = [], 0
        for t in e.turns:
            pos += len(t.action_ids)
            ends.append(pos - 1)
            pos += len(t.observation_ids)
        ep = {"episode_id": e.id, "num_turns": len(e.turns), "turn_ends": ends,
              "turn_state_keys": [t.state_key for t in e.turns], "tool_calls": sum(t.tool_calls for t in e.turns),
              "tool_calls_per_turn": [t.tool_calls for t in e.turns], "success": e.success,
              "finish_reason": e.finish, "episode_return": e.episode_return, "episode_success": e.success,
              "turn_rewards": [t.reward for t in e.turns], "transcript": tokenizer.decode(transcript_ids),
              "transcript_ids": transcript_ids, "env_info": dict(e.info)}
        if branching:
            ep.update(branch_parent=e.parent, branch_turn=e.branch_turn,
                      turn_entropy=[sum(t.token_entropy) / len(t.token_entropy) if t.token_entropy else None
                                    for t in e.turns])
        if limits.layout == "concat":
            prompts.append(e.prompt_ids)
            completions.append(transcript_ids)
            loss.append([m for t in e.turns for m in [1] * len(t.action_ids) + [0] * len(t.observation_ids)])
            logps.append([lp for t in e.turns for lp in t.action_logps + [0.0] * len(t.observation_ids)])
            turn_ids.append([k for k, t in enumerate(e.turns) for _ in range(len(t.action_ids) + len(t.observation_ids))])
            groups.append(e.group)
            step_rewards.append(ep["turn_rewards"])
            state_keys.append(e.turns[0].state_key if e.turns else "")
            for k, v in ep.items():
                meta[k].append(v)
            continue
        for k_turn, t in enumerate(e.turns):
            prompts.append(t.context_ids)
            completions.append(t.action_ids)
            loss.append([1] * len(t.action_ids))
            logps.append(t.action_logps)
            turn_ids.append([k_turn] * len(t.action_ids))
            groups.append(e.group)
            step_rewards.append(ep["turn_rewards"])
            step_ids.append(k_turn)
            state_keys.append(t.state_key)
            for k, v in ep.items():
                meta[k].append(v)
            meta["turn_index"].append(k_turn)
    batch = RolloutBatch.from_token_lists(prompts, completions, pad, behavior=logps, group_ids=groups, metadata=meta)
    T = batch.completion_ids.shape[1]
    batch.loss_mask = pad_rows(loss, 0, left=False, width=T)[0].float()
    tid = torch.full((len(turn_ids), T), -1, dtype=torch.long)
    for b, row in enumerate(turn_ids):
        tid[b, :len(row)] = torch.tensor(row, dtype=torch.long)
    batch.turn_ids = tid
    if limits.layout == "per_turn":
        _history_metadata(batch, [t for e in episodes for t in e.turns])
    batch.rewards = torch.tensor(meta["episode_return"], dtype=torch.float32)
    batch.step_rewards = step_rewards
    batch.state_keys = state_keys
    if limits.layout == "per_turn":
        batch.step_ids = torch.tensor(step_ids, dtype=torch.long)
    return batch


def _history_metadata(batch: RolloutBatch, turns: list[TurnRecord]) -> None:
    """per_turn rows: the history policy's second context (`alt_prompt_ids`, the row's own prompt
    where a policy gave none) and its info keys (None where a row has no value)."""
    if any(t.alt_context_ids is not None for t in turns):
        batch.metadata["alt_prompt_ids"] = [t.alt_context_ids if t.alt_context_ids is not None else t.context_ids
                                            for t in turns]
    for key in sorted({k for t in turns for k in t.history_info}):
        batch.metadata[key] = [t.history_info.get(key) for t in turns]


class EpisodeEngine:
    """The engine interface over episodes: `generate(rows, params, seed, *, first_index)` runs
    `run_episodes` on dataset rows (where a token engine takes prompt ids), so the trainer's
    rollout pipeline, evaluation, dynamic-sampling refills and greedy baselines run episodes."""

    def __init__(self, engine, env_factory, tokenizer, limits: Limits, *, history: str = "full", history_k: int = 2,
                 history_kwargs: dict | None = None, plain: bool | None = None, system_prompt: str | None = None,
                 arpo: dict | None = None):
        """`arpo`: `ArpoRollout` settings (`total` = rollout.n): used for sampled calls of `total`
        episodes per row (the step's batch, dynamic-sampling refills); other calls (greedy
        evaluation and baselines, pass@k with another k) play plain episodes."""
        self.engine, self.env_factory, self.tokenizer, self.limits = engine, env_factory, tokenizer, limits
        self.arpo = dict(arpo) if arpo is not None else None
        self.history, self.history_k, self.history_kwargs = history, history_k, dict(history_kwargs or {})
        self.plain, self.system_prompt = plain, system_prompt

    @property
    def shares_model(self) -> bool:
        return getattr(self.engine, "shares_model", True)

    def renderer(self, env) -> ChatRenderer:
        return ChatRenderer(self.tokenizer, plain=self.plain, tools=getattr(env, "tools", ()) or (),
                            system_prompt=getattr(env, "system_prompt", None) or self.system_prompt)

    def generate(self, rows: Sequence, params: SamplingParams, seed: int = 0, *, first_index: int = 0) -> RolloutBatch:
        arpo = None
        if self.arpo is not None and params.n == self.arpo["total"] and not params.greedy:
            arpo = ArpoRollout(**self.arpo)
        return run_episodes(self.engine, self.env_factory, rows, self.tokenizer, params, self.limits, seed,
                            first_index=first_index, renderer=self.renderer, history=self.history,
                            history_k=self.history_k, history_kwargs=self.history_kwargs, progress=params.progress,
                            arpo=arpo)

    def sync_weights(self, model) -> None:
        self.engine.sync_weights(model)
