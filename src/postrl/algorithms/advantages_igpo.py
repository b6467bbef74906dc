"""IGPO: turn rewards from the policy's own growing belief in the ground-truth answer.

Owns the estimator `igpo` (ADVANTAGES, needs "turns" and "answer_logprobs") and the function
that serves the "answer_logprobs" need, `answer_logprob_per_turn`: for every turn k of every row,
the mean log-prob of the reference answer's tokens given the context BEFORE turn k (prompt +
every earlier action and observation) and an answer prefix. The trainer (trainers/rl.py) calls
`fill_answer_logprobs` with the learner's model under no_grad and writes the lists to
`batch.metadata["answer_logprob_per_turn"]`; the estimator only reads them, so it stays a pure
function of the batch and is tested on hand-written numbers.
"""

from __future__ import annotations

import math

import torch

from postrl.algorithms.agent_steps import agent_steps, layout, scatter
from postrl.algorithms.registries import ADVANTAGES
from postrl.rollout.batch import RolloutBatch

META_KEY = "answer_logprob_per_turn"


# ------------------------------------------------------------------ serving the need (model side)
def _turn_starts(batch: RolloutBatch, b: int) -> list[int]:
    """Completion index of the first token of each turn of concat row b (turn_ids == k)."""
    ids = batch.turn_ids[b]
    n = int(ids.max().item()) + 1 if ids.numel() and ids.max() >= 0 else 0
    starts = []
    for k in range(n):
        where = (ids == k).nonzero()
        starts.append(int(where[0]) if where.numel() else (starts[-1] if starts else 0))
    return starts


def _contexts(batch: RolloutBatch) -> list[list[list[int]]]:
    """Per row, the token context before each of its turns (one context for single-turn and per_turn rows)."""
    out = []
    for b in range(batch.size):
        prompt = batch.prompt_ids[b][batch.prompt_mask[b] > 0].tolist()
        comp = batch.completion_ids[b][batch.completion_mask[b] > 0].tolist()
        if layout(batch) == "concat" and batch.step_ids is None:
            out.append([prompt + comp[:s] for s in _turn_starts(batch, b)] or [prompt])
        else:  # per_turn rows: the row's prompt IS the context before its turn; single-turn: the prompt
            out.append([prompt])
    return out


@torch.no_grad()
def answer_logprob_per_turn(model, batch: RolloutBatch, answer_ids_per_row: list[list[int]],
                            prefix_ids: list[int] | tuple = (), *, micro_batch: int = 8, pad_id: int = 0
                            ) -> list[list[float]]:
    """[B] lists: entry k = (1/L) sum_j log pi(a_j | context before turn k, prefix, a_<j), L = len(answer).

    Concat rows get one value per turn (context = prompt + completion tokens before turn k's first
    token); per_turn rows get the value of their own prompt, and rows of one episode (metadata
    "episode_id") are then joined in turn order, so every row carries its episode's full list;
    single-turn rows get [log pi(a | prompt)]. Sequences are right-padded (positions of real tokens
    are unchanged) and run `micro_batch` at a time.
    """
    if len(answer_ids_per_row) != batch.size:
        raise ValueError(f"answer_logprob_per_turn: {len(answer_ids_per_row)} answers for {batch.size} rows")
    for b, a in enumerate(answer_ids_per_row):
        if not a:
            raise ValueError(f"answer_logprob_per_turn: row {b} has an empty answer (no tokens); IGPO needs "
                             "a non-empty reference answer per row")
    prefix = list(prefix_ids)
    seqs, where = [], []  # (sequence, index of the first answer token, answer length)
    ctx = _contexts(batch)
    for b, contexts in enumerate(ctx):
        for k, c in enumerate(contexts):
            seqs.append((c + prefix + list(answer_ids_per_row[b]), len(c) + len(prefix), len(answer_ids_per_row[b])))
            where.append((b, k))
    device = next(model.parameters()).device
    values: list[float] = []
    for i in range(0, len(seqs), micro_batch):
        chunk = seqs[i:i + micro_batch]
        width = max(len(s) for s, _, _ in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attn = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, (s, _, _) in enumerate(chunk):
            ids[r, :len(s)] = torch.tensor(s)
            attn[r, :len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        for r, (_, start, L) in enumerate(chunk):  # position p-1 predicts token p
            values.append(float(logp[r, start - 1:start - 1 + L].mean()))
    out: list[list[float]] = [[] for _ in range(batch.size)]
    for (b, _), v in zip(where, values):
        out[b].append(v)
    if batch.step_ids is not None:  # per_turn: join an episode's rows in turn order
        eps = batch.metadata.get("episode_id")
        if eps is None:
            raise ValueError("answer_logprob_per_turn: per_turn rows need metadata['episode_id']")
        by_ep: dict = {}
        for b in range(batch.size):
            by_ep.setdefault(eps[b], {})[int(batch.step_ids[b])] = out[b][0]
        out = [[by_ep[eps[b]][k] for k in sorted(by_ep[eps[b]])] for b in range(batch.size)]
    return out


def fill_answer_logprobs(batch: RolloutBatch, model, tokenizer, rows: list, *, answer_prefix: str = "",
                         micro_batch: int = 8) -> None:
    """Trainer hook of the "answer_logprobs" need: tokenise each row's reference answer (the dataset
    row's `answer` column) with the policy tokenizer and write `batch.metadata[META_KEY]`.
    `rows` = the dataset row of each batch row."""
    if model is None:
        raise ValueError("the advantage estimator needs 'answer_logprobs' (IGPO), which runs the policy in the "
                         "trainer process; this learner placement (distributed.backend: ray) has no local model. "
                         "Use distributed.backend: local or another algorithm.advantage")
    answers = []
    for b, row in enumerate(rows):
        answer = getattr(row, "answer", None)
        if answer is None or str(answer).strip() == "":
            raise ValueError(f"the advantage estimator needs 'answer_logprobs' (IGPO): batch row {b} (dataset row "
                             f"{getattr(row, 'index', '?')}) has no reference answer; give the dataset an answer "
                             "column (data.columns.answer) or choose another algorithm.advantage")
        answers.append(tokenizer.encode(str(answer), add_special_tokens=False))
    prefix = tokenizer.encode(answer_prefix, add_special_tokens=False) if answer_prefix else []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()  # the policy's belief, without dropout
    try:
        batch.metadata[META_KEY] = answer_logprob_per_turn(model, batch, answers, prefix, micro_batch=micro_batch,
                                                           pad_id=pad)
    finally:
        model.train(was_training)


# ------------------------------------------------------------------ the estimator (pure)
def _group_normalise(values: list[float], ids: list, eps: float, scale_by_std: bool) -> list[float]:
    """(x - mean_id) / (population std_id + eps) over entries sharing an id (the official code's
    statistics: biased std, and std = 1 for a group of one, so a lone value becomes x - x = 0)."""
    groups: dict = {}
    for v, g in zip(values, ids):
        groups.setdefault(g, []).append(v)
    stats = {}
    for g, vs in groups.items():
        m = sum(vs) / len(vs)
        sd = math.sqrt(sum((v - m) ** 2 for v in vs) / len(vs) + 1e-8) if len(vs) > 1 else 1.0
        stats[g] = (m, sd)
    return [(v - stats[g][0]) / ((stats[g][1] + eps) if scale_by_std else 1.0) for v, g in zip(values, ids)]


@ADVANTAGES.register("igpo", paper="Information Gain-based Policy Optimization: A Simple and Effective Approach "
                     "for Multi-Turn LLM Agents", arxiv="2510.14967", needs=("turns", "answer_logprobs"),
                     summary="turn reward = gain in the policy's probability of the ground-truth answer; "
                             "group-normalised over all turn rewards, discounted turn-level return")
def igpo(batch: RolloutBatch, *, gamma: float = 1.0, ig_coef: float = 1.0, scale_by_std: bool = True,
         eps: float = 1e-6, answer_prefix: str = "", micro_batch: int = 8) -> torch.Tensor:
    """IGPO (sec. 3): information-gain turn rewards, normalised in the group, accumulated per turn.

        pi_k    = exp( (1/L) sum_j log pi_theta(a_j | q, o_<k, a_<j) )   belief before turn k (0-based)
        r_k     = pi_{k+1} - pi_k                  k < T-1   (information gain of turn k)
        r_{T-1} = R                                final turn: the outcome reward (e.g. F1)
        r~      = (r - mean_G r) / (std_G r + eps) over ALL turn rewards of the prompt's G episodes
        A_k     = r~_k + gamma * A_{k+1}           on every action token of turn k

    pi_k comes from metadata["answer_logprob_per_turn"][b][k] (log pi_k, k = 0 before any turn),
    filled by the trainer for the "answer_logprobs" need (`fill_answer_logprobs`, using
    `answer_prefix` between the context and the answer and `micro_batch`; the estimator itself
    ignores those two). Env turn rewards (step_rewards; the part of R they leave unexplained
    counts on the last turn, agent_steps) are added to every turn, so with the usual sparse env
    the intermediate rewards are exactly ig_coef * IG and the last one is R. Statistics follow the
    official code (GuoqingWang1/IGPO core_algos, "joint" mode): population std, a group of one
    gets std 1; gamma = 1.0 is that code's default (the paper's value not confirmed). Single-turn
    rows have no intermediate turn, so igpo is GRPO with population std there.
    """
    steps = agent_steps(batch, "igpo")
    if not steps.size:
        return scatter(batch, steps, torch.zeros(0))
    lp = batch.metadata.get(META_KEY)
    if lp is None or len(lp) != batch.size:
        raise ValueError(f"igpo needs batch.metadata[{META_KEY!r}] (one list per row: log pi(answer | context "
                         "before turn k)); the trainer fills it for estimators that need 'answer_logprobs'")
    rewards = []
    for s in range(steps.size):
        e, k, b = steps.episode[s], steps.turn[s], steps.row[s]
        T = len(steps.ep_rewards[e])
        r = steps.ep_rewards[e][k]
        if k < T - 1:
            if len(lp[b]) < k + 2:
                raise ValueError(f"igpo: row {b} has {len(lp[b])} answer log-probs in metadata[{META_KEY!r}] but "
                                 f"turn {k} of a {T}-turn episode needs entries {k} and {k + 1}")
            r += ig_coef * (math.exp(lp[b][k + 1]) - math.exp(lp[b][k]))
        rewards.append(r)
    norm = _group_normalise(rewards, steps.group(), eps, scale_by_std)
    by_ep: dict[int, dict[int, float]] = {}
    for s, v in enumerate(norm):
        by_ep.setdefault(steps.episode[s], {})[steps.turn[s]] = v
    adv = []
    for s in range(steps.size):
        turns = by_ep[steps.episode[s]]
        adv.append(sum(gamma ** (j - steps.turn[s]) * v for j, v in turns.items() if j >= steps.turn[s]))
    return scatter(batch, steps, torch.tensor(adv, dtype=torch.float32))
