"""env_metrics: an episode whose tool call ran but whose result did not fit env.max_total_tokens."""

from __future__ import annotations

from postrl.data.loading import PromptRow
from postrl.envs import load_env
from postrl.learner.tiny import build_tokenizer
from postrl.rollout.engines import SamplingParams
from postrl.rollout.multiturn import Limits, run_episodes
from postrl.trainers.env_rollout import env_metrics
from tests.rollout.test_multiturn import Scripted

CALL = '<call>calculator("482*37")</call>'  # 32 characters = 32 tokens of the tiny tokenizer


def _metrics(max_total_tokens: int) -> dict[str, float]:
    tok = build_tokenizer()
    rows = [PromptRow(index=0, prompt="What is 482*37?", answer="17834", columns={"expression": "482*37"})]
    engine = Scripted(tok, lambda turn, r: [CALL, "17834"][min(turn, 1)])
    batch = run_episodes(engine, load_env("calculator", {"describe_tools": False}), rows, tok,
                         SamplingParams(n=1, max_new_tokens=32), Limits(max_turns=4, max_total_tokens=max_total_tokens),
                         seed=0)
    return env_metrics(batch)


def test_cut_after_a_tool_call_is_reported():
    # 17 prompt tokens + 32 call tokens + the rendered tool message do not fit in 96: the call ran
    # (1 tool call) but the episode ends after its only turn, unanswered.
    m = _metrics(96)
    assert (m["env/turns"], m["env/tool_calls"], m["env/max_tokens"], m["env/success"]) == (1.0, 1.0, 1.0, 0.0)
    # with room for the result the same script answers in a second turn
    m = _metrics(120)
    assert (m["env/turns"], m["env/tool_calls"], m["env/max_tokens"], m["env/success"]) == (2.0, 1.0, 0.0, 1.0)
