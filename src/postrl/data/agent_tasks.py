"""Built-in tasks for the built-in environments: RL rows and noisy-expert SFT warm starts.

    task:gridworld       rows {prompt: [user: grid], grid: lines, shortest}     (env: gridworld)
    task:gridworld_sft   rows {messages: [user, assistant, user, ..., assistant]}
    task:search_qa       rows {prompt: [user: question], answer, entity, attribute, hops} (env: search)
    task:search_qa_sft   rows {messages: [...]}

An `_sft` task plays one episode per train/test problem with a scripted expert that errs on
purpose (`noise`: a random action with that probability), so the warm-started model is good but
imperfect and RL has room to improve it. Each episode becomes one row per assistant turn (the
history up to that turn, ending on it): `postrl sft` trains on the last assistant message of a
`messages` row and never on the prompt, so every turn's action is learned, and only actions.
Splits use the same stable hash of the problem's first prompt as the RL task, so an SFT warm start
never sees a test problem. The env modules are imported inside the functions: `postrl.envs`
imports the data package, not the other way round.
"""

from __future__ import annotations

import random

from postrl.data.tasks import TASKS, _check_fraction, _check_split, select_split


def _turn_rows(messages: list[dict]) -> list[dict]:
    """One SFT row per assistant message: the conversation up to and including it."""
    return [{"messages": messages[:i + 1]} for i, m in enumerate(messages) if m["role"] == "assistant"]


def _check_noise(noise: float) -> None:
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")


# ---------------------------------------------------------------------------------- gridworld
@TASKS.register("gridworld", paper="built-in synthetic task (env: gridworld)",
                summary="solvable grid layouts (A, G, walls) for the gridworld env")
def gridworld(split: str, *, size: int = 4, walls: int = 3, min_distance: int = 3, count: int = 2000,
              seed: int = 0, test_fraction: float = 0.1, limit: int | None = None) -> list[dict]:
    """`count` distinct solvable `size` x `size` layouts with `walls` walls whose start is at
    least `min_distance` moves from the goal. The prompt is the grid text; extra columns `grid`
    (list of lines, what the env reads) and `shortest` (the optimal number of moves)."""
    from postrl.envs.games import layouts

    _check_split(split)
    if size < 2 or walls < 0 or walls + 2 > size * size or min_distance < 1 or count < 1:
        raise ValueError(f"gridworld: need size >= 2, 0 <= walls <= size*size - 2, min_distance >= 1 and "
                         f"count >= 1; got size={size}, walls={walls}, min_distance={min_distance}, count={count}")
    rows = [{"prompt": [{"role": "user", "content": "\n".join(lay["grid"])}], **lay}
            for lay in layouts(count, size, walls, min_distance)]
    if not rows:
        raise ValueError(f"gridworld: no {size}x{size} layout with {walls} walls has a start "
                         f"{min_distance} or more moves from the goal; lower min_distance")
    return select_split(rows, split, seed=seed, test_fraction=test_fraction, limit=limit)


@TASKS.register("gridworld_sft", paper="built-in synthetic task (env: gridworld)",
                summary="noisy BFS-expert gridworld episodes as multi-turn SFT rows")
def gridworld_sft(split: str, *, noise: float = 0.3, slack: int = 2, episodes: int = 1, size: int = 4,
                  walls: int = 3, min_distance: int = 3, count: int = 2000, seed: int = 0,
                  test_fraction: float = 0.1, limit: int | None = None) -> list[dict]:
    """`episodes` episodes per `task:gridworld` layout (same split) played by the shortest-path
    expert that moves at random with probability `noise`; `limit` counts layouts, not rows.
    Keep `slack` equal to the env's so the expert's episodes end where the env's would."""
    from postrl.envs.games import expert_episode

    _check_noise(noise)
    problems = gridworld(split, size=size, walls=walls, min_distance=min_distance, count=count, seed=seed,
                         test_fraction=test_fraction, limit=limit)
    rng = random.Random(f"gridworld_sft:{seed}:{noise}")
    rows = []
    if episodes < 1:
        raise ValueError(f"gridworld_sft: episodes must be >= 1, got {episodes}")
    for p in problems:
        for _ in range(episodes):
            rows += _turn_rows(expert_episode(p["grid"], slack=slack, noise=noise, rng=rng))
    return rows


# ---------------------------------------------------------------------------------- search_qa
@TASKS.register("search_qa", paper="built-in synthetic task (env: search)",
                summary="questions about invented people, answerable only by searching the local corpus")
def search_qa(split: str, *, hops: list[int] | int = 1, seed: int = 0, test_fraction: float = 0.1,
              limit: int | None = None) -> list[dict]:
    """Questions over the `search` env's corpus (400 invented people): with `hops: 1` "Where was
    Zorvak born?" and "What does Zorvak do?" (800), with 2 also "Where was Zorvak's mentor
    born?" (400 more). Answer = the city or job; extra columns `person`, `attribute`, `hops`."""
    from postrl.envs.search import questions

    _check_split(split)
    wanted = {hops} if isinstance(hops, int) else set(hops)
    if not wanted or not wanted <= {1, 2}:
        raise ValueError(f"search_qa: hops must be 1, 2 or a list of them, got {hops!r}")
    rows = [{"prompt": [{"role": "user", "content": q["question"]}], **{k: v for k, v in q.items() if k != "question"}}
            for q in questions() if q["hops"] in wanted]
    return select_split(rows, split, seed=seed, test_fraction=test_fraction, limit=limit)


@TASKS.register("search_qa_sft", paper="built-in synthetic task (env: search)",
                summary="noisy-expert search episodes (search, read, answer) as multi-turn SFT rows")
def search_qa_sft(split: str, *, noise: float = 0.3, describe_tools: bool = True, hops: list[int] | int = 1,
                  seed: int = 0, test_fraction: float = 0.1, limit: int | None = None) -> list[dict]:
    """Episodes of `task:search_qa` (same split) played through the `search` env by an expert
    that searches the person's name (and, for two hops, the mentor's), then answers; with
    probability `noise` it answers at once with a guess (a random city or job: almost always
    wrong), as a model without the corpus would. The system message holds the plain tool
    description unless `describe_tools` is false (the env's option of the same name: set both
    alike), as the rollout shows it to a template without tool support (the tiny model)."""
    from postrl.data.loading import PromptRow
    from postrl.envs.search import JOBS, SearchEnv, expert_calls, people
    from postrl.envs.tools import with_plain_tools

    _check_noise(noise)
    rng = random.Random(f"search_qa_sft:{seed}:{noise}")
    cities = sorted({p.city for p in people()})
    out = []
    for i, rec in enumerate(search_qa(split, hops=hops, seed=seed, test_fraction=test_fraction, limit=limit)):
        env = SearchEnv(describe_tools=describe_tools)
        row = PromptRow(index=i, prompt=rec["prompt"], answer=rec["answer"], columns=rec)
        messages = with_plain_tools(env.reset(row, seed), env.tools)
        if rng.random() < noise:
            guess = rng.choice(JOBS if rec["attribute"] == "job" else cities)
            out += _turn_rows(messages + [{"role": "assistant", "content": guess}])
            continue
        for call in expert_calls(rec["person"], rec["attribute"]):
            result = env.step(call)
            if result.done or result.info.get("tool_errors"):
                raise RuntimeError(f"search_qa_sft: the expert call {call!r} failed: {result.observation}")
            messages += [{"role": "assistant", "content": call},
                         {"role": env.observation_role, "content": result.observation}]
        out += _turn_rows(messages + [{"role": "assistant", "content": rec["answer"]}])
    return out
