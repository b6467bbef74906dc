"""The rollout schedule: shard boundaries, pending steps, FIFO weight syncs in the background."""

import torch

from postrl.rollout.pipeline import Rollouts, shard_bounds


def test_shard_bounds_are_contiguous_and_differ_by_at_most_one():
    assert shard_bounds(7, 3) == [0, 2, 4, 7]
    assert shard_bounds(2, 4) == [0, 0, 1, 1, 2]  # more parts than items: some are empty
    for n in range(12):
        b = shard_bounds(n, 5)
        sizes = [hi - lo for lo, hi in zip(b, b[1:])]
        assert b[0] == 0 and b[-1] == n and max(sizes) - min(sizes) <= 1


class _VersionEngine:
    """Returns the weights version it held when generating; records the order of calls."""

    def __init__(self):
        self.version, self.calls = 0, []

    def generate(self, prompt_ids, params, seed=0, *, first_index=0):
        self.calls.append(("generate", seed))
        return self.version

    def sync_weights(self, state):
        self.calls.append(("sync", int(state["v"])))
        self.version = int(state["v"])


def test_background_rollouts_use_the_weights_of_their_request_time():
    engine, version = _VersionEngine(), {"v": torch.tensor(0)}
    r = Rollouts(engine, weights=lambda: version, lag=1, background=True)
    r.request(0, [0], [[1]], None, seed=10)
    r.request(1, [1], [[1]], None, seed=11)
    assert r.pending() == {0: [0], 1: [1]}
    assert r.get(0) == ([0], 0)
    version["v"].fill_(1)  # the learner trains on after the sync: the snapshot must not follow it
    r.sync()
    version["v"].fill_(2)
    r.request(2, [2], [[1]], None, seed=12)
    assert r.get(1) == ([1], 0) and r.get(2) == ([2], 1)
    r.close()
    assert engine.calls == [("generate", 10), ("generate", 11), ("sync", 1), ("generate", 12)]


def test_an_engine_on_the_learners_module_is_never_synced():
    engine = _VersionEngine()
    r = Rollouts(engine, weights=lambda: {"v": torch.tensor(5)}, shares_model=True)
    r.sync()
    r.request(0, [0], [[1]], None, seed=0)
    assert r.get(0) == ([0], 0) and engine.calls == [("generate", 0)]
