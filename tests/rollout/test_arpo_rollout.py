"""ARPO inside run_episodes: entropy decisions fork episodes whose prefix tokens are the parent's,
the per-prompt total stays rollout.n (branches + whole-episode supplements), an env that does not
replay is refused, and the success replay swaps an all-failed group's last episode for a stored one."""

from __future__ import annotations

import json

import pytest
import torch

from postrl.data.loading import PromptRow
from postrl.envs import StepResult, load_env
from postrl.learner.tiny import build_tokenizer
from postrl.rollout.arpo import ArpoRollout
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams
from postrl.rollout.multiturn import Limits, run_episodes
from postrl.trainers.arpo_replay import EpisodeReplay

ENVS = "tests.envs.tiny_envs"


def rows(n=1):
    return [PromptRow(index=i, prompt=f"task {i}", answer=None, columns={}) for i in range(n)]


class EntropyScript:
    """Call c, row r -> the text f"a{c}{r}" (2 digits: reward 1 in CountEnv), log-prob -0.5 per
    token, and token entropies `entropy(c)` on every token (what the hf engine returns with entropy=True)."""

    def __init__(self, tokenizer, entropy):
        self.tokenizer, self.entropy, self.calls = tokenizer, entropy, []
        self.eos_ids = torch.tensor([tokenizer.eos_token_id])

    def generate(self, prompts, params, seed=0, *, first_index=0, entropy=False):
        c = len(self.calls)
        comps = [self.tokenizer(f"a{c}{r}", add_special_tokens=False)["input_ids"][:params.max_new_tokens]
                 for r in range(len(prompts))]
        self.calls.append([list(p) for p in prompts])
        out = RolloutBatch.from_token_lists(prompts, comps, self.tokenizer.pad_token_id,
                                            behavior=[[-0.5] * len(x) for x in comps], group_ids=list(range(len(prompts))))
        if entropy:
            out.metadata["token_entropy"] = [[self.entropy(c)] * len(x) for x in comps]
        return out


def rising(c):  # the first actions have entropy 1, later ones 2: dH = 1, P = 0.5 + 0.2 = 0.7 > 0.5
    return 1.0 if c == 0 else 2.0


def play(entropy, arpo, n_rows=1, n=4, layout="concat", env="CountEnv", target=3):
    tok = build_tokenizer()
    engine = EntropyScript(tok, entropy)
    batch = run_episodes(engine, load_env(f"{ENVS}:{env}", {"target": target}), rows(n_rows), tok,
                         SamplingParams(n=n, max_new_tokens=6), Limits(layout=layout, max_total_tokens=400), seed=5,
                         arpo=arpo)
    return batch, engine


def test_rising_entropy_forks_the_initial_episodes_with_the_parents_prefix():
    batch, engine = play(rising, ArpoRollout(total=4, initial=2, beam=1))
    m = batch.metadata
    assert m["episode_id"] == [0, 1, 2, 3] and batch.group_ids.tolist() == [0, 0, 0, 0]
    assert m["branch_parent"] == [-1, -1, 0, 1] and m["branch_turn"] == [0, 0, 1, 1]
    assert m["num_turns"] == [3, 3, 3, 3]
    # calls: turn 0 of 0,1; turn 1 of 0,1 (both branch, budget 2 spent); turn 2 of 0,1 + turn 1 of forks; forks' turn 2
    assert [len(c) for c in engine.calls] == [2, 2, 4, 2]
    for fork, parent in ((2, 0), (3, 1)):
        cut = batch.turn_ids[fork].tolist().index(1)  # action 0 + observation 0 are the copied prefix
        assert cut > 0 and batch.completion_ids[fork, :cut].tolist() == batch.completion_ids[parent, :cut].tolist()
        assert batch.behavior_logprobs[fork, :cut].tolist() == batch.behavior_logprobs[parent, :cut].tolist()
        assert m["transcript_ids"][fork][:cut] == m["transcript_ids"][parent][:cut]
        assert m["transcript_ids"][fork] != m["transcript_ids"][parent]  # its own action 1 onwards
    # the forks' turn-1 context (call 2, rows 2 and 3) is exactly the parents' turn-1 context (call 1)
    assert engine.calls[2][2] == engine.calls[1][0] and engine.calls[2][3] == engine.calls[1][1]
    # the replayed env gives the parent's observations (CountEnv's depend on the reset seed)
    assert m["turn_rewards"] == [[1.0, 1.0, 1.0]] * 4
    assert m["turn_entropy"][0] == [1.0, 2.0, 2.0] and m["turn_entropy"][2] == [1.0, 2.0, 2.0]


def test_budget_caps_branches_and_groups_stay_together():
    # M=5, N=2, Z=2: episode 0 takes 2 branches, episode 1 only the 1 left
    batch, _ = play(rising, ArpoRollout(total=5, initial=2, beam=2), n_rows=2, n=5)
    m = batch.metadata
    assert m["episode_id"] == list(range(10))
    assert batch.group_ids.tolist() == [0] * 5 + [1] * 5
    assert m["branch_parent"] == [-1, -1, 0, 0, 1, -1, -1, 5, 5, 6]


def test_no_branching_fills_the_budget_with_whole_episodes():
    batch, engine = play(rising, ArpoRollout(total=4, initial=2, beam=1, alpha=0.0))  # P = 0.2 dH <= 0.5
    m = batch.metadata
    assert m["branch_parent"] == [-1] * 4 and m["num_turns"] == [3] * 4
    assert [len(c) for c in engine.calls] == [2, 2, 2, 2, 2, 2]  # supplements start after the first two end


def test_falling_entropy_does_not_branch_and_non_tool_turns_are_skipped():
    batch, _ = play(lambda c: 2.0 if c == 0 else 1.0, ArpoRollout(total=3, initial=2, beam=1), n=3)
    assert batch.metadata["branch_parent"] == [-1, -1, -1]
    # NeverDoneEnv reports no tool calls: no branching point ever, whatever the entropy
    batch, _ = play(rising, ArpoRollout(total=3, initial=1, beam=1), n=3, env="NeverDoneEnv")
    assert batch.metadata["branch_parent"] == [-1, -1, -1]


def test_per_turn_rows_of_a_fork_repeat_the_parents_prefix_turns():
    batch, _ = play(rising, ArpoRollout(total=3, initial=2, beam=1), n=3, layout="per_turn")
    m = batch.metadata
    rows_of = {e: [b for b in range(batch.size) if m["episode_id"][b] == e] for e in set(m["episode_id"])}
    assert m["branch_parent"][rows_of[2][0]] == 0 and len(rows_of[2]) == 3
    parent0, fork0 = rows_of[0][0], rows_of[2][0]
    assert torch.equal(batch.completion_ids[parent0], batch.completion_ids[fork0])
    assert torch.equal(batch.prompt_ids[parent0], batch.prompt_ids[fork0])


class DriftEnv:
    """A CountEnv whose observations depend on a process-wide counter: not replayable."""

    count = 0
    max_turns = 3

    def reset(self, row, seed):
        return "go"

    def step(self, action):
        DriftEnv.count += 1
        return StepResult(f"obs {DriftEnv.count}", 0.0, False, {"tool_calls": 1})


def test_an_env_that_does_not_replay_is_refused():
    tok = build_tokenizer()
    with pytest.raises(RuntimeError, match="replaying turn 0 .* depend only on"):
        run_episodes(EntropyScript(tok, rising), load_env("tests.rollout.test_arpo_rollout:DriftEnv", {}), rows(1),
                     tok, SamplingParams(n=2, max_new_tokens=4), Limits(max_total_tokens=400), seed=0,
                     arpo=ArpoRollout(total=2, initial=1, beam=1))


def test_arpo_needs_entropies_and_the_total_to_match():
    tok = build_tokenizer()

    class NoEntropy(EntropyScript):
        def generate(self, prompts, params, seed=0, *, first_index=0, entropy=False):
            return super().generate(prompts, params, seed, first_index=first_index)

    make = load_env(f"{ENVS}:CountEnv", {})
    with pytest.raises(ValueError, match="rollout.engine: hf"):
        run_episodes(NoEntropy(tok, rising), make, rows(1), tok, SamplingParams(n=2, max_new_tokens=4), Limits(), 0,
                     arpo=ArpoRollout(total=2, initial=1))
    with pytest.raises(ValueError, match="must equal rollout.n"):
        run_episodes(EntropyScript(tok, rising), make, rows(1), tok, SamplingParams(n=3, max_new_tokens=4), Limits(),
                     0, arpo=ArpoRollout(total=2, initial=1))


# ------------------------------------------------------------------ success replay (trainers/arpo_replay.py)
def _episodes(returns, first_id=0):
    """A concat batch of one group per list in `returns` (n = len of each), env returns as given."""
    tok = build_tokenizer()
    batch = run_episodes(EntropyScript(tok, rising), load_env(f"{ENVS}:CountEnv", {"target": 1}), rows(len(returns)),
                         tok, SamplingParams(n=len(returns[0]), max_new_tokens=4), Limits(max_total_tokens=400),
                         seed=first_id, first_index=first_id)
    flat = [r for g in returns for r in g]
    batch.metadata["episode_return"] = flat  # as if the env had paid these
    return batch


def test_replay_swaps_an_all_failed_groups_last_episode_for_a_stored_success():
    replay = EpisodeReplay(capacity=2, threshold=1.0)
    step1 = _episodes([[1.0, 0.0], [0.0, 0.0]])  # prompt 7 succeeds once; prompt 9 fails
    out, metrics = replay(step1, [7, 9], seed=0)
    assert out is step1 and metrics["replay/replaced_groups"] == 0.0 and metrics["replay/stored"] == 1.0
    stored_ids = step1.completion_ids[0, :int(step1.completion_mask[0].sum())].tolist()

    step2 = _episodes([[0.0, 0.0], [0.0, 0.0]], first_id=5)  # prompts 9 and 7, both all-failed
    out, metrics = replay(step2, [9, 7], seed=1)
    assert metrics["replay/replaced_groups"] == 1.0  # only prompt 7 has a stored success
    m = out.metadata
    assert m["episode_id"] == step2.metadata["episode_id"]  # the replaced episode keeps its id and place
    assert out.group_ids.tolist() == [0, 0, 1, 1] and m["replayed"] == [False, False, False, True]
    assert out.completion_ids[3, :len(stored_ids)].tolist() == stored_ids
    assert m["episode_return"][3] == 1.0 and out.behavior_logprobs[3, 0].item() == -0.5
    for b in range(3):  # the other rows are unchanged
        n = int(step2.completion_mask[b].sum())
        assert out.completion_ids[b, :n].tolist() == step2.completion_ids[b, :n].tolist()


def test_replay_state_round_trips_through_the_checkpoint_json():
    replay = EpisodeReplay(capacity=2)
    replay(_episodes([[1.0, 0.0]]), [3], seed=0)
    state = json.loads(json.dumps(replay.state_dict()))
    again = EpisodeReplay(capacity=2)
    again.load_state_dict(state)
    a, _ = replay(_episodes([[0.0, 0.0]], first_id=2), [3], seed=4)
    b, _ = again(_episodes([[0.0, 0.0]], first_id=2), [3], seed=4)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.metadata == b.metadata
    assert torch.equal(a.behavior_logprobs, b.behavior_logprobs) and a.metadata["replayed"] == [False, True]
    with pytest.raises(ValueError, match="same settings"):
        EpisodeReplay(capacity=3).load_state_dict(state)
