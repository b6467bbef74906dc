"""The gridworld env on hand-written moves, its expert and its tasks."""

import random

import pytest

from postrl.data import TASKS
from postrl.data.loading import PromptRow
from postrl.envs import ENVS, load_env
from postrl.envs.games import GridWorld, distances, expert_action, expert_episode, parse_grid

# A at (0,0), walls at (0,2) and (1,1), G at (2,2): shortest path down, down, right, right = 4.
GRID = ["A.#",
        ".#.",
        "..G"]


def row(grid=GRID):
    return PromptRow(index=0, prompt=[{"role": "user", "content": "\n".join(grid)}], answer=None,
                     columns={"grid": grid})


def env(slack=2):
    e = GridWorld(slack=slack)
    first = e.reset(row(), seed=0)
    assert first == [{"role": "user", "content": "A.#\n.#.\n..G"}]
    return e


def test_moves_walls_and_edges():
    e = env()
    r = e.step("right")
    assert (r.observation, r.reward, r.done) == (".A#\n.#.\n..G", 0.0, False)
    r = e.step("right")  # into the wall at (0,2): no move
    assert r.observation == ".A#\n.#.\n..G" and not r.done
    r = e.step("down")  # into the wall at (1,1)
    assert r.observation == ".A#\n.#.\n..G"
    r = e.step(" Left. ")  # case, spaces and a final period are tolerated
    assert r.observation == "A.#\n.#.\n..G"
    r = e.step("up")  # off the grid: no move
    assert r.observation == "A.#\n.#.\n..G" and not r.done


def test_reaching_the_goal_pays_one_and_ends():
    e = env()
    for move in ("down", "down", "right"):
        assert not e.step(move).done
    r = e.step("right")
    assert (r.observation, r.reward, r.done, r.info["success"]) == (None, 1.0, True, True)


def test_the_turn_budget_is_shortest_plus_slack():
    e = env(slack=1)  # budget 4 + 1 = 5 turns
    for _ in range(4):
        assert not e.step("up").done
    r = e.step("up")
    assert (r.reward, r.done, r.info["success"]) == (0.0, True, False)
    e = env(slack=0)  # budget 4: the optimal path still succeeds on its last turn
    results = [e.step(m) for m in ("down", "down", "right", "right")]
    assert results[-1].reward == 1.0 and not any(r.done for r in results[:-1])


def test_a_malformed_move_is_an_error_observation_not_an_exception():
    e = env()
    r = e.step("go north-east please")
    assert not r.done and r.reward == 0.0
    assert "invalid move" in r.info["error"]
    assert r.observation == "reply up, down, left or right\nA.#\n.#.\n..G"
    r = e.step("")
    assert "error" in r.info and not r.done


def test_state_keys_repeat_across_episodes_and_revisits():
    a, b = env(), env()
    assert a.state_key() == b.state_key()  # same layout, same start: one anchor state
    start = a.state_key()
    a.step("right")
    a.step("left")
    assert a.state_key() == start  # back at the start: the state repeats within an episode too
    b.step("down")
    assert b.state_key() != start


def test_expert_follows_a_shortest_path():
    walls, size, pos, goal = parse_grid(GRID)
    assert distances(walls, size, goal)[pos] == 4
    assert expert_action(walls, size, pos, goal) == "down"  # right leads into a dead end (5 moves left)
    msgs = expert_episode(GRID, slack=2, noise=0.0, rng=random.Random(0))
    assert [m["content"] for m in msgs if m["role"] == "assistant"] == ["down", "down", "right", "right"]
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 4


def test_bad_grids_are_clear_errors():
    with pytest.raises(ValueError, match="exactly one"):
        parse_grid(["..", ".."])
    with pytest.raises(ValueError, match="unknown cell"):
        parse_grid(["AX", ".G"])
    with pytest.raises(ValueError, match="cannot be reached"):
        GridWorld().reset(row(["A#", "#G"]), 0)
    with pytest.raises(ValueError, match="no 'grid' column"):
        GridWorld().reset(PromptRow(index=0, prompt="x", answer=None, columns={}), 0)


def test_registered_and_loadable():
    assert "gridworld" in ENVS
    make = load_env("gridworld", {"slack": 3})
    assert make().slack == 3


def test_tasks_split_by_layout_and_sft_rows_end_on_a_move():
    train, test = TASKS["gridworld"]("train"), TASKS["gridworld"]("test")
    grids = lambda rows: {"\n".join(r["grid"]) for r in rows}  # noqa: E731
    assert train and test and not grids(train) & grids(test)
    assert all(r["shortest"] >= 3 for r in train)
    sft = TASKS["gridworld_sft"]("test", limit=20)
    assert sft and all(r["messages"][-1]["role"] == "assistant" for r in sft)
    assert {r["messages"][0]["content"] for r in sft} <= grids(test)
    noiseless = TASKS["gridworld_sft"]("test", noise=0.0, limit=20)
    # without noise every episode is optimal: one row per move of the shortest path
    assert len(noiseless) == sum(r["shortest"] for r in TASKS["gridworld"]("test", limit=20))
