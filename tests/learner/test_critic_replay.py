"""ArCHer's off-policy critic (learner/critic_replay.py): the transition buffer, the transitions of a
hand-built 2-turn episode, TD targets from the target critic, the soft update, and checkpoints.

The 2-turn concat episode: prompt [5], completion [10, 11, 90, 12, 13] (90 = an observation token)

    completion position  0   1   2   3   4
    turn_ids             0   0   0   1   1
    loss_mask            1   1   0   1   1         turn rewards [0, 1]

ids position = completion position + 1 (one prompt token), so V(s_0) is read at ids position 0
(before token 10), Q(s_0, a_0) at 1 (before 11), V(s_1) at 3 (before 12), Q(s_1, a_1) at 4.
"""

import pytest
import torch
from helpers import tiny_rl_config
from learner.forward_cases import TOK

from postrl.learner.critic import build_critic
from postrl.learner.critic_replay import (CriticReplay, Transition, TransitionBuffer, batch_transitions,
                                          read_values, soft_update, td_targets, training_view)
from postrl.rollout.batch import RolloutBatch


def two_turn_batch() -> RolloutBatch:
    return RolloutBatch(
        prompt_ids=torch.tensor([[0, 5]]), prompt_mask=torch.tensor([[0, 1]]),  # left-padded prompt
        completion_ids=torch.tensor([[10, 11, 90, 12, 13, 0]]), completion_mask=torch.tensor([[1, 1, 1, 1, 1, 0]]),
        loss_mask=torch.tensor([[1.0, 1, 0, 1, 1, 0]]), behavior_logprobs=torch.zeros(1, 6),
        group_ids=torch.tensor([0]), rewards=torch.tensor([1.0]), step_rewards=[[0.0, 1.0]],
        turn_ids=torch.tensor([[0, 0, 0, 1, 1, -1]]), metadata={"episode_id": [0]})


def _critic(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"algorithm.preset": "archer", "train.micro_batch_size": 2})
    return build_critic(cfg, TOK, torch.device("cpu"))


def _t(i: int) -> Transition:
    return Transition(torch.tensor([i, i], dtype=torch.int32), 0, 0, float(i), None)


def test_transitions_of_a_two_turn_episode():
    t0, t1 = batch_transitions(two_turn_batch())
    assert t0.ids.tolist() == [5, 10, 11] and (t0.v_at, t0.q_at, t0.reward) == (0, 1, 0.0)
    assert t0.next_ids.tolist() == [5, 10, 11, 90]  # the context before the next action's first token
    assert t1.ids.tolist() == [5, 10, 11, 90, 12, 13] and (t1.v_at, t1.q_at, t1.reward) == (3, 4, 1.0)
    assert t1.next_ids is None  # the episode ends
    single = RolloutBatch.from_token_lists([[3, 4]], [[7]], 0)
    single.rewards = torch.tensor([0.5])
    (t,) = batch_transitions(single)  # one terminal turn; a one-token action has v_at == q_at
    assert t.ids.tolist() == [3, 4, 7] and (t.v_at, t.q_at, t.reward, t.next_ids) == (1, 1, 0.5, None)


def test_buffer_is_fifo_and_its_seeded_sample_survives_a_round_trip():
    buf = TransitionBuffer(3)
    buf.add([_t(0), _t(1)])
    buf.add([_t(2), _t(3)])  # 4 added, capacity 3: the oldest (0) is evicted
    assert [t.reward for t in buf.items] == [1.0, 2.0, 3.0] and buf.added == 4 and len(buf) == 3
    draw = [t.reward for t in buf.sample(6, torch.Generator().manual_seed(7))]
    assert draw == [t.reward for t in buf.sample(6, torch.Generator().manual_seed(7))]  # seeded
    assert set(draw) <= {1.0, 2.0, 3.0} and len(draw) == 6  # with replacement, only kept items
    assert buf.sample(4, torch.Generator().manual_seed(7)) and not TransitionBuffer(2).sample(3, torch.Generator())
    copy = TransitionBuffer(3)
    copy.load_state_dict(buf.state_dict())
    assert [t.reward for t in copy.sample(6, torch.Generator().manual_seed(7))] == draw and copy.added == 4
    with pytest.raises(ValueError, match="replay_capacity"):
        TransitionBuffer(0)


def test_td_targets_hand_computed():
    t0, t1 = batch_transitions(two_turn_batch())
    q_bar, v_next = torch.tensor([0.3, 0.8]), torch.tensor([0.5, 99.0])  # 99: after the end, ignored
    returns, mask = td_targets([t0, t1], q_bar, v_next, gamma=0.9, mode="qv")
    # t0: Q (col 1) <- 0 + 0.9 * 0.5 = 0.45, V (col 0) <- Q-bar = 0.3; t1: Q (col 4) <- 1 (done), V (col 3) <- 0.8
    assert returns.tolist()[0][:2] == pytest.approx([0.3, 0.45]) and returns[0, 2:].abs().sum() == 0
    assert returns[1].tolist() == pytest.approx([0, 0, 0, 0.8, 1.0])
    assert mask.tolist() == [[1, 1, 0, 0, 0], [0, 0, 0, 1, 1]]
    returns, mask = td_targets([t0, t1], q_bar, v_next, gamma=0.9, mode="td")  # V alone, towards r + gamma V'
    assert returns.flatten().tolist() == pytest.approx([0.45, 0, 0, 0, 0, 0, 0, 0, 1.0, 0])
    assert mask.tolist() == [[1, 0, 0, 0, 0], [0, 0, 0, 1, 0]]


def test_targets_come_from_the_target_critic(tmp_path):
    critic = _critic(tmp_path)
    replay = CriticReplay(critic, capacity=10, sample=None, tau=0.1, gamma=0.9, mode="qv")
    with torch.no_grad():
        replay.target.score.bias.fill_(0.5)  # the target says 0.5 everywhere, the online critic 0
    returns, mask = replay._targets(batch_transitions(two_turn_batch()))
    # t0: Q <- 0 + 0.9 * 0.5 = 0.45, V <- Q-bar(s_0, a_0) = 0.5; t1: Q <- 1 (done), V <- 0.5
    assert returns[0, :2].tolist() == pytest.approx([0.5, 0.45]) and returns[1, 3:].tolist() == pytest.approx([0.5, 1.0])
    assert mask.sum() == 4


def test_read_positions_are_the_states_the_estimator_reads(tmp_path):
    critic = _critic(tmp_path)
    with torch.no_grad():
        critic.model.score.weight.normal_(generator=torch.Generator().manual_seed(0))
    batch = two_turn_batch()
    on_batch = critic.values(batch).values[0]  # V before completion token t, on the padded batch row
    ts = batch_transitions(batch)
    kw = {"micro_batch_size": 2, "device": torch.device("cpu"), "autocast": critic.autocast}
    v = read_values(critic.model, [t.ids for t in ts], [t.v_at for t in ts], **kw)
    q = read_values(critic.model, [t.ids for t in ts], [t.q_at for t in ts], **kw)
    v_next = read_values(critic.model, [ts[0].next_ids], [ts[0].next_ids.numel() - 1], **kw)
    # turns start at completion positions 0 and 3 and end at 1 and 4
    assert v.tolist() == pytest.approx([float(on_batch[0]), float(on_batch[3])], abs=1e-5)
    assert q.tolist() == pytest.approx([float(on_batch[1]), float(on_batch[4])], abs=1e-5)
    assert float(v_next[0]) == pytest.approx(float(on_batch[3]), abs=1e-5)
    view = critic.values(training_view(ts)).values  # the training rows: column = ids position
    assert float(view[1, 3]) == pytest.approx(float(on_batch[3]), abs=1e-5)


def test_soft_update_arithmetic():
    target, online = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    with torch.no_grad():
        target.weight.fill_(1.0), target.bias.fill_(0.0), online.weight.fill_(3.0), online.bias.fill_(2.0)
    soft_update(target, online, 0.1)  # 0.9 * 1 + 0.1 * 3 = 1.2; 0.9 * 0 + 0.1 * 2 = 0.2
    assert float(target.weight.detach()) == pytest.approx(1.2) and float(target.bias.detach()) == pytest.approx(0.2)
    soft_update(target, online, 1.0)  # tau 1: a copy
    assert float(target.weight.detach()) == 3.0 and float(target.bias.detach()) == 2.0
    with pytest.raises(ValueError, match="target_tau"):
        CriticReplay(type("C", (), {"model": online})(), capacity=1, sample=None, tau=0.0, gamma=0.9, mode="qv")


def test_train_fills_the_buffer_replays_it_and_moves_the_target_softly(tmp_path):
    critic = _critic(tmp_path)
    critic.optimizer.param_groups[0]["lr"] = 1e-2
    replay = CriticReplay(critic, capacity=3, sample=None, tau=0.5, gamma=0.9, mode="qv")
    m1 = replay.train(two_turn_batch(), epochs=2, mini_batches=1, seed=0)
    assert (m1["critic/transitions"], m1["critic/replayed"], m1["critic/replay_size"]) == (2.0, 0.0, 2.0)
    head, target = critic.model.score.weight, replay.target.score.weight
    assert head.abs().sum() > 0 and target.abs().sum() > 0 and not torch.equal(head, target)  # tau < 1 lags
    m2 = replay.train(two_turn_batch(), epochs=1, mini_batches=1, seed=1)
    assert (m2["critic/replayed"], m2["critic/replay_size"]) == (2.0, 3.0)  # FIFO capacity 3
    assert [t.reward for t in replay.buffer.items] == [1.0, 0.0, 1.0]  # the first episode's turn 0 was evicted


def test_checkpoint_round_trip_and_missing_directory(tmp_path):
    critic = _critic(tmp_path)
    replay = CriticReplay(critic, capacity=5, sample=1, tau=0.1, gamma=0.9, mode="qv")
    replay.train(two_turn_batch(), epochs=1, mini_batches=1, seed=0)
    replay.save(tmp_path / "ckpt")
    other = CriticReplay(_critic(tmp_path / "b"), capacity=5, sample=1, tau=0.1, gamma=0.9, mode="qv")
    other.load(tmp_path / "ckpt")
    assert all(torch.equal(a, b) for a, b in zip(replay.target.state_dict().values(), other.target.state_dict().values()))
    assert [t.ids.tolist() for t in other.buffer.items] == [t.ids.tolist() for t in replay.buffer.items]
    assert other.buffer.items[0].next_ids.tolist() == [5, 10, 11, 90] and other.buffer.added == 2
    with pytest.raises(FileNotFoundError, match="no critic replay buffer"):
        other.load(tmp_path / "nothing")
