"""ArCHer's off-policy utterance-level critic: a turn-transition replay buffer and a target critic.

For estimators whose registry entry needs "critic_replay" (archer), the trainer does not train the
value model (`learner/critic.py`) on the targets the estimator left on the batch. Instead, after the
policy update, `CriticReplay.train` runs ArCHer's critic update (arXiv 2402.19446, Alg. 1; official
repo `offpolicy_train_loop.py` / `archer/trainer.py`):

  1. the batch's turns become transitions (s_k, a_k, r_k, s_{k+1}, done) (`batch_transitions`);
  2. a uniform sample (with replacement) of past transitions is drawn from a bounded FIFO buffer;
  3. for every critic epoch: TD targets are recomputed with the TARGET critic (weights theta-bar),

         Q(s_k, a_k) <- r_k + gamma * (1 - done_k) * V-bar(s_{k+1})       ("qv" mode, 2-token+ actions)
         V(s_k)      <- Q-bar(s_k, a_k)
         V(s_k)      <- r_k + gamma * (1 - done_k) * V-bar(s_{k+1})       ("td" mode / one-token action)

     the online critic takes `mini_batches` optimizer steps on current + replayed transitions, and
     the target follows it softly: theta-bar <- (1 - tau) * theta-bar + tau * theta;
  4. the batch's transitions join the buffer (the oldest leave beyond `critic.replay_capacity`).

A transition is token ids: `ids` = the context before the turn plus the turn's action tokens; the
value head read at `v_at` is V(s_k) (the state before the first action token) and at `q_at` is
Q(s_k, a_k) (the state with all but the action's last token written), as `advantages_archer.py`
reads them on the batch; `next_ids` is the context before the next turn's first action token
(V-bar(s_{k+1}) is read at its last position), None when the episode ends there.

Buffer (with its insertion count) and target critic are saved in every checkpoint
(`checkpoints/step_*/critic_replay`), and the sample is drawn from the step's seed, so a resumed
run repeats the killed one exactly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from postrl.algorithms.advantages_archer import next_step, turn_bounds
from postrl.algorithms.agent_steps import agent_steps
from postrl.rollout.batch import RolloutBatch

REPLAY_DIR = "critic_replay"
"""Subdirectory of every `checkpoints/step_*` that holds the replay buffer and the target critic."""
BUFFER_FILE, TARGET_FILE = "buffer.pt", "target_critic.pt"


@dataclass
class Transition:
    ids: torch.Tensor  # int32 [n]: context before turn k + its action tokens
    v_at: int  # position in ids whose value-head output is V(s_k)
    q_at: int  # position whose output is Q(s_k, a_k); == v_at for a one-token action
    reward: float  # r_k
    next_ids: torch.Tensor | None  # int32: context of s_{k+1} (V read at its last position); None: done

    def as_tuple(self) -> tuple:
        return (self.ids, self.v_at, self.q_at, self.reward, self.next_ids)


def batch_transitions(batch: RolloutBatch, name: str = "critic_replay") -> list[Transition]:
    """The turn transitions of a batch in any layout (concat, per_turn, single-turn), in step order.

    Turn rewards and the next turn follow `advantages_archer.archer` exactly (`agent_steps`; a turn
    whose next turn is not in the batch ends its episode). In concat rows the ids of all turns are
    views of one row tensor, so the buffer stores each episode's tokens once."""
    steps = agent_steps(batch, name)
    if not steps.size:
        return []
    first, last = turn_bounds(steps)
    follow = next_step(steps)
    rows: dict[int, tuple[torch.Tensor, int]] = {}

    def row(b: int) -> tuple[torch.Tensor, int]:
        if b not in rows:
            prompt = batch.prompt_ids[b][batch.prompt_mask[b] > 0]
            if not prompt.numel():
                raise ValueError(f"{name}: row {b} has an empty prompt; a state needs at least one token")
            completion = batch.completion_ids[b][:int(batch.completion_mask[b].sum())]
            rows[b] = (torch.cat([prompt, completion]).to(torch.int32), prompt.numel())
        return rows[b]

    out = []
    for s in range(steps.size):
        ids, P = row(steps.row[s])
        n = follow[s]
        next_ids = None
        if n is not None:
            n_ids, n_P = row(steps.row[n])
            next_ids = n_ids[:n_P + first[n]]
        out.append(Transition(ids[:P + last[s] + 1], P + first[s] - 1, P + last[s] - 1,
                              float(steps.ep_rewards[steps.episode[s]][steps.turn[s]]), next_ids))
    return out


class TransitionBuffer:
    """A bounded FIFO of transitions: `add` appends and evicts the oldest beyond `capacity`; `sample`
    draws uniformly with replacement (as ArCHer's official ReplayBuffer) from a given generator."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"critic.replay_capacity must be >= 1, got {capacity}")
        self.capacity, self.items, self.added = capacity, [], 0

    def __len__(self) -> int:
        return len(self.items)

    def add(self, transitions: list[Transition]) -> None:
        self.items.extend(transitions)
        self.added += len(transitions)
        del self.items[:max(len(self.items) - self.capacity, 0)]

    def sample(self, n: int, generator: torch.Generator) -> list[Transition]:
        if not self.items or n <= 0:
            return []
        return [self.items[i] for i in torch.randint(len(self.items), (n,), generator=generator).tolist()]

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "added": self.added, "items": [t.as_tuple() for t in self.items]}

    def load_state_dict(self, state: dict) -> None:
        self.items = [Transition(*t) for t in state["items"]][-self.capacity:]
        self.added = int(state["added"])


@torch.no_grad()
def soft_update(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    """theta-bar <- (1 - tau) * theta-bar + tau * theta, parameter by parameter (tau = 1: a copy)."""
    for (name, t), (other, o) in zip(target.named_parameters(), online.named_parameters(), strict=True):
        if name != other:
            raise ValueError(f"target critic parameter {name!r} does not match the critic's {other!r}")
        t.mul_(1.0 - tau).add_(o.detach().to(t.dtype), alpha=tau)


def training_view(transitions: list[Transition]) -> RolloutBatch:
    """One row per transition in the critic's batch layout: prompt = ids[:1], completion = ids[1:],
    so the critic's value column t is the head output at position t of `ids`."""
    return RolloutBatch.from_token_lists([t.ids[:1].tolist() for t in transitions],
                                         [t.ids[1:].tolist() for t in transitions], 0)


@torch.no_grad()
def read_values(model, seqs: list[torch.Tensor], at: list[int], *, micro_batch_size: int,
                device: torch.device, autocast) -> torch.Tensor:
    """[N] value-head outputs of `model` at position at[i] of sequence seqs[i] (right-padded chunks)."""
    out = []
    model.eval()
    for i in range(0, len(seqs), micro_batch_size):
        chunk, pos_at = seqs[i:i + micro_batch_size], at[i:i + micro_batch_size]
        L = max(s.numel() for s in chunk)
        ids = torch.zeros(len(chunk), L, dtype=torch.long)
        attn = torch.zeros(len(chunk), L, dtype=torch.long)
        for j, s in enumerate(chunk):
            ids[j, :s.numel()], attn[j, :s.numel()] = s.long(), 1
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        with autocast():
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=pos.to(device),
                           use_cache=False).logits[..., 0].float()
        out.append(logits[torch.arange(len(chunk)), torch.tensor(pos_at)].cpu())
    return torch.cat(out) if out else torch.zeros(0)


def td_targets(transitions: list[Transition], q_bar: torch.Tensor, v_bar_next: torch.Tensor, *,
               gamma: float, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(returns, value_mask) [N, T] on `training_view(transitions)`'s columns.

    `q_bar[i]`: the target critic's output at q_at of transition i; `v_bar_next[i]`: at the last
    position of next_ids (ignored when done). Q is trained at q_at, V at v_at; a one-token action
    (v_at == q_at) or mode "td" trains V alone towards the TD target."""
    T = max(max((t.ids.numel() - 1 for t in transitions), default=1), 1)
    returns, mask = torch.zeros(len(transitions), T), torch.zeros(len(transitions), T)
    for i, t in enumerate(transitions):
        target = t.reward + (gamma * float(v_bar_next[i]) if t.next_ids is not None else 0.0)
        if mode == "qv" and t.q_at != t.v_at:
            returns[i, t.q_at], returns[i, t.v_at] = target, float(q_bar[i])
            mask[i, t.q_at] = mask[i, t.v_at] = 1.0
        else:
            returns[i, t.v_at], mask[i, t.v_at] = target, 1.0
    return returns, mask


class CriticReplay:
    """Owns the replay buffer and the target critic of one `Critic`, and its checkpoint directory.

    `gamma` and `mode` are the estimator's resolved hyperparameters (the same TD rule on both sides);
    `sample` transitions are replayed per step (None: as many as the current batch has)."""

    def __init__(self, critic, *, capacity: int, sample: int | None, tau: float, gamma: float, mode: str):
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"critic.target_tau must be in (0, 1], got {tau}")
        if mode not in ("qv", "td"):
            raise ValueError(f"critic replay: mode must be 'qv' or 'td', got {mode!r}")
        self.critic, self.tau, self.gamma, self.mode, self.sample = critic, tau, gamma, mode, sample
        self.buffer = TransitionBuffer(capacity)
        self.target = copy.deepcopy(critic.model).eval()  # theta-bar starts as theta (official: soft update, tau 1)
        self.target.requires_grad_(False)

    def _targets(self, transitions: list[Transition]) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.critic
        kw = {"micro_batch_size": c.micro_batch_size, "device": c.device, "autocast": c.autocast}
        q_bar = read_values(self.target, [t.ids for t in transitions], [t.q_at for t in transitions], **kw)
        nxt = [i for i, t in enumerate(transitions) if t.next_ids is not None]
        v_next = torch.zeros(len(transitions))
        if nxt:
            seqs = [transitions[i].next_ids for i in nxt]
            v_next[nxt] = read_values(self.target, seqs, [s.numel() - 1 for s in seqs], **kw)
        return td_targets(transitions, q_bar, v_next, gamma=self.gamma, mode=self.mode)

    def train(self, batch: RolloutBatch, *, epochs: int, mini_batches: int, seed: int) -> dict[str, float]:
        """One step of the off-policy critic on `batch`'s turns and a replayed sample; metrics."""
        fresh = batch_transitions(batch, "critic_replay")
        replayed = self.buffer.sample(len(fresh) if self.sample is None else self.sample,
                                      torch.Generator().manual_seed(seed))
        transitions = fresh + replayed
        metrics: dict[str, float] = {}
        if transitions:
            view = training_view(transitions)
            for e in range(epochs):  # the target moves after every epoch, so its targets are recomputed
                returns, mask = self._targets(transitions)
                old = self.critic.values(view).values  # the clipping anchor: the critic before this epoch
                metrics = self.critic.train_on_batch(view, returns, old, mask=mask, epochs=1,
                                                     mini_batches=mini_batches, seed=seed + e)
                soft_update(self.target, self.critic.model, self.tau)
        self.buffer.add(fresh)
        metrics.update({"critic/replayed": float(len(replayed)), "critic/transitions": float(len(fresh)),
                        "critic/replay_size": float(len(self.buffer))})
        return metrics

    # ------------------------------------------------------------------- checkpoints
    def save(self, path: str | Path) -> None:
        """Buffer and target critic into `path` (inside the checkpoint's temporary directory)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.buffer.state_dict(), path / BUFFER_FILE)
        torch.save({k: v.detach().cpu() for k, v in self.target.state_dict().items()}, path / TARGET_FILE)

    def load(self, path: str | Path) -> None:
        path = Path(path)
        if not (path / BUFFER_FILE).exists() or not (path / TARGET_FILE).exists():
            raise FileNotFoundError(f"{path}: this checkpoint holds no critic replay buffer / target critic "
                                    "(was the run started with another advantage estimator?); resume it with "
                                    "the same algorithm")
        self.buffer.load_state_dict(torch.load(path / BUFFER_FILE, map_location="cpu", weights_only=True))
        self.target.load_state_dict(torch.load(path / TARGET_FILE, map_location="cpu", weights_only=True))


def build_critic_replay(cfg, critic, hparams: dict) -> CriticReplay:
    """The replay critic of an `RLConfig` (`critic.replay_capacity`, `replay_sample`, `target_tau`)
    around `critic`; `hparams` are the estimator's resolved kwargs (its `gamma` and `mode`)."""
    return CriticReplay(critic, capacity=cfg.critic.replay_capacity, sample=cfg.critic.replay_sample,
                        tau=cfg.critic.target_tau, gamma=float(hparams["gamma"]), mode=hparams["mode"])
