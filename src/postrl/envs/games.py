"""Built-in text game: `gridworld`, a multi-turn navigation task with a sparse reward.

The agent `A` must reach the goal `G` on a small grid with walls `#`; every turn the model
replies with one move (`up`, `down`, `left` or `right`) and sees the new grid:

    ..#.        a 4x4 layout (the first observation = the task prompt);
    A...        "right" moves A one cell; a move into a wall or off the grid leaves A
    .#..        where it is; reaching G ends the episode with reward 1.
    ...G

Reward is 1.0 only on reaching the goal within the row's turn budget (shortest path + `slack`
turns) and 0 otherwise: one sparse reward per episode, as in RAGEN's FrozenLake/Sokoban
("RAGEN: Understanding Self-Evolution in LLM Agents via Multi-Turn Reinforcement Learning",
arXiv 2504.20073). A reply that is not one of the four moves costs a turn and gets an error
observation (never an exception). `state_key()` is the current grid (which includes the agent's
position), so episodes of one layout revisit the same states: the anchor states GiGPO groups
("Group-in-Group Policy Optimization for LLM Agent Training", arXiv 2505.10978).

Layouts and the noisy-expert trajectories used as an SFT warm start are generated here;
`postrl.data.agent_tasks` serves them as `task:gridworld` and `task:gridworld_sft`.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from postrl.envs.base import ENVS, StepResult

MOVES = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
"""Action word -> (row delta, column delta)."""
WALL, FREE, AGENT, GOAL = "#", ".", "A", "G"


def render(walls: frozenset, size: int, agent: tuple[int, int], goal: tuple[int, int]) -> str:
    """The grid as `size` lines of `size` characters."""
    def cell(r: int, c: int) -> str:
        return AGENT if (r, c) == agent else GOAL if (r, c) == goal else WALL if (r, c) in walls else FREE
    return "\n".join("".join(cell(r, c) for c in range(size)) for r in range(size))


def parse_grid(lines: list[str]) -> tuple[frozenset, int, tuple[int, int], tuple[int, int]]:
    """(walls, size, agent, goal) of a square grid given as lines; ValueError names the problem."""
    size = len(lines)
    if size < 2 or any(len(line) != size for line in lines):
        raise ValueError(f"gridworld: the grid must be square with >= 2 rows, got {lines!r}")
    found: dict[str, list] = {AGENT: [], GOAL: []}
    walls = set()
    for r, line in enumerate(lines):
        for c, ch in enumerate(line):
            if ch not in (WALL, FREE, AGENT, GOAL):
                raise ValueError(f"gridworld: unknown cell {ch!r} in row {r} of {lines!r}; "
                                 f"cells are {WALL!r} {FREE!r} {AGENT!r} {GOAL!r}")
            if ch == WALL:
                walls.add((r, c))
            elif ch in found:
                found[ch].append((r, c))
    if len(found[AGENT]) != 1 or len(found[GOAL]) != 1:
        raise ValueError(f"gridworld: the grid needs exactly one {AGENT!r} and one {GOAL!r}, got {lines!r}")
    return frozenset(walls), size, found[AGENT][0], found[GOAL][0]


def move(walls: frozenset, size: int, pos: tuple[int, int], action: str) -> tuple[int, int]:
    """The position after `action` (unchanged when blocked by a wall or the edge)."""
    dr, dc = MOVES[action]
    r, c = pos[0] + dr, pos[1] + dc
    return (r, c) if 0 <= r < size and 0 <= c < size and (r, c) not in walls else pos


def distances(walls: frozenset, size: int, goal: tuple[int, int]) -> dict[tuple[int, int], int]:
    """Shortest number of moves from every reachable cell to `goal` (BFS from the goal)."""
    dist = {goal: 0}
    queue = deque([goal])
    while queue:
        pos = queue.popleft()
        for action in MOVES:
            nxt = move(walls, size, pos, action)
            if nxt not in dist:
                dist[nxt] = dist[pos] + 1
                queue.append(nxt)
    return dist


def expert_action(walls: frozenset, size: int, pos: tuple[int, int], goal: tuple[int, int]) -> str:
    """The first move (in the order up, down, left, right) on a shortest path to the goal."""
    dist = distances(walls, size, goal)
    return min(MOVES, key=lambda a: (dist.get(move(walls, size, pos, a), size * size + 1), list(MOVES).index(a)))


def layouts(count: int, size: int, walls: int, min_distance: int) -> list[dict]:
    """`count` distinct solvable layouts (fewer if 50 * count draws do not find that many):
    {"grid": lines, "shortest": moves}; fixed seed, so every run builds the same list."""
    rng = random.Random(f"gridworld:{size}:{walls}:{min_distance}")
    cells = [(r, c) for r in range(size) for c in range(size)]
    out, seen = [], set()
    for _ in range(50 * count):
        if len(out) >= count:
            break
        picked = rng.sample(cells, walls + 2)
        wall_set, agent, goal = frozenset(picked[2:]), picked[0], picked[1]
        shortest = distances(wall_set, size, goal).get(agent)
        if shortest is None or shortest < min_distance:
            continue
        text = render(wall_set, size, agent, goal)
        if text not in seen:
            seen.add(text)
            out.append({"grid": text.split("\n"), "shortest": shortest})
    return out


@ENVS.register("gridworld", paper="RAGEN: Understanding Self-Evolution in LLM Agents via Multi-Turn "
               "Reinforcement Learning", arxiv="2504.20073",
               summary="reach G on a small grid with walls; moves up/down/left/right; reward 1 only at the goal")
class GridWorld:
    """One gridworld episode. Rows need a `grid` column (list of lines with one A and one G) and
    may give `shortest` (computed when absent); the turn budget is shortest + `slack`."""

    max_turns = 16
    """Upper bound for the rollout; an episode also ends at its own budget (shortest + slack)."""

    def __init__(self, slack: int = 2):
        if slack < 0:
            raise ValueError(f"gridworld: slack must be >= 0, got {slack}")
        self.slack = slack

    def reset(self, row: Any, seed: int) -> list[dict]:
        columns = getattr(row, "columns", None) or {}
        if "grid" not in columns:
            raise ValueError("gridworld: the dataset row has no 'grid' column (a list of lines with one A "
                             "and one G); use data.source: task:gridworld or add the column")
        self.walls, self.size, self.pos, self.goal = parse_grid(list(columns["grid"]))
        shortest = distances(self.walls, self.size, self.goal).get(self.pos)
        if shortest is None:
            raise ValueError(f"gridworld: the goal cannot be reached in {columns['grid']!r}")
        self.budget = shortest + self.slack
        self.turns = 0
        # The row's own prompt (it may carry data.system_prompt); the grid when it has none.
        prompt = getattr(row, "prompt", None)
        return prompt if prompt else [{"role": "user", "content": self.render()}]

    def render(self) -> str:
        return render(self.walls, self.size, self.pos, self.goal)

    def state_key(self) -> str:
        return self.render()

    def step(self, action: str) -> StepResult:
        self.turns += 1
        word = action.strip().lower().rstrip(".")
        info: dict = {}
        if word in MOVES:
            self.pos = move(self.walls, self.size, self.pos, word)
        else:
            info["error"] = f"invalid move {action.strip()[:40]!r}"
        if self.pos == self.goal:
            return StepResult(None, 1.0, True, {**info, "success": True})
        if self.turns >= self.budget:
            return StepResult(None, 0.0, True, {**info, "success": False})
        text = self.render()
        if "error" in info:
            text = "reply up, down, left or right\n" + text
        return StepResult(text, 0.0, False, info)


def expert_episode(grid: list[str], *, slack: int, noise: float, rng: random.Random) -> list[dict]:
    """Chat messages of one episode played by the BFS expert that takes a uniformly random move
    with probability `noise`: [user grid, assistant move, user grid, ...] (ends on a move)."""
    env = GridWorld(slack=slack)
    messages = list(env.reset(_Row(None, {"grid": grid}), 0))
    while True:
        if rng.random() < noise:
            action = rng.choice(list(MOVES))
        else:
            action = expert_action(env.walls, env.size, env.pos, env.goal)
        messages.append({"role": "assistant", "content": action})
        result = env.step(action)
        if result.done:
            return messages
        messages.append({"role": "user", "content": result.observation})


class _Row:
    """The part of a dataset row an env reads (`prompt`, `columns`), for expert episodes."""

    def __init__(self, prompt, columns: dict):
        self.prompt, self.columns = prompt, columns
