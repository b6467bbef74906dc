"""Multi-turn rollout: masking, template suffixes, limits, timeouts, concurrency, invariance."""

from __future__ import annotations

import time

import pytest
import torch

from postrl.data.loading import PromptRow
from postrl.envs import load_env
from postrl.learner.tiny import build_model, build_tokenizer
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.chat_turns import ChatRenderer
from postrl.rollout.engines import SamplingParams
from postrl.rollout.hf_engine import HFEngine
from postrl.rollout.history import HISTORIES, HistoryInput, TurnRecord
from postrl.rollout.multiturn import Limits, run_episodes
from tests.rollout.qwen_style import qwen_style_tokenizer

ENVS = "tests.envs.tiny_envs"


def rows(n=2):
    return [PromptRow(index=i, prompt=f"task {i}", answer=None, columns={}) for i in range(n)]


@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer()
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
    return tok, model


class Recording:
    """Wraps an engine and keeps every call's sampled ids (what the batch must contain)."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []
        self.eos_ids = getattr(engine, "eos_ids", None)

    def generate(self, prompts, params, seed=0, *, first_index=0):
        out = self.engine.generate(prompts, params, seed, first_index=first_index)
        sampled = [ids[m.bool()].tolist() for ids, m in zip(out.completion_ids, out.completion_mask)]
        self.calls.append((prompts, sampled))
        return out


class Scripted:
    """A test engine emitting given texts: call t, row r -> script(t, r) (tokenised), log-prob -0.5."""

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script, self.turn = tokenizer, script, 0
        self.eos_ids = torch.tensor([tokenizer.eos_token_id])

    def generate(self, prompts, params, seed=0, *, first_index=0):
        comps = [self.tokenizer(self.script(self.turn, r), add_special_tokens=False)["input_ids"][:params.max_new_tokens]
                 for r in range(len(prompts))]
        self.turn += 1
        return RolloutBatch.from_token_lists(prompts, comps, self.tokenizer.pad_token_id,
                                             behavior=[[-0.5] * len(c) for c in comps], group_ids=list(range(len(prompts))))


def test_concat_masks_and_exact_tokens(tiny):
    tok, model = tiny
    engine = Recording(HFEngine(model, tok, micro_batch_size=64))
    make = load_env(f"{ENVS}:CountEnv", {"target": 3})
    params = SamplingParams(n=2, max_new_tokens=5)
    batch = run_episodes(engine, make, rows(2), tok, params, Limits(max_turns=5, max_total_tokens=500), seed=3)
    assert batch.size == 4 and len(engine.calls) == 3  # one engine call per turn, all episodes together
    renderer = ChatRenderer(tok)
    for b in range(4):
        L = int(batch.completion_mask[b].sum())
        ids, loss = batch.completion_ids[b, :L].tolist(), batch.loss_mask[b, :L].tolist()
        pos, expected_loss, expected_turn = 0, [], []
        for k in range(3):
            sampled = engine.calls[k][1][b]  # every episode is alive for all 3 turns: row b of each call
            assert ids[pos:pos + len(sampled)] == sampled  # the trained tokens are the sampled tokens
            expected_loss += [1.0] * len(sampled)
            expected_turn += [k] * len(sampled)
            pos += len(sampled)
            assert batch.metadata["turn_ends"][b][k] == pos - 1
            if k < 2:
                ended = tok.decode([sampled[-1]]) if sampled[-1] == tok.eos_token_id else None
                obs = renderer.observation_ids("user", f"turn {k + 1} seed {_env_seed(batch, b) % 7}",
                                               action_ended_with=ended)
                assert ids[pos:pos + len(obs)] == obs
                expected_loss += [0.0] * len(obs)
                expected_turn += [k] * len(obs)
                pos += len(obs)
        assert pos == L and loss == expected_loss
        assert batch.turn_ids[b, :L].tolist() == expected_turn and (batch.turn_ids[b, L:] == -1).all()
        assert (batch.behavior_logprobs[b, :L][torch.tensor(loss) == 0] == 0).all()
        # the context of turn k is exactly prompt + everything before it
        for k in range(3):
            ctx = engine.calls[k][0][b]
            assert ctx == batch.prompt_ids[b][batch.prompt_mask[b].bool()].tolist() + ids[:_prefix_len(batch, b, k)]
    assert batch.metadata["finish_reason"] == ["done"] * 4 and batch.metadata["num_turns"] == [3] * 4
    assert batch.group_ids.tolist() == [0, 0, 1, 1] and batch.metadata["episode_id"] == [0, 1, 2, 3]
    assert batch.step_rewards[0] == [float(any(c.isdigit() for c in tok.decode(engine.calls[k][1][0], skip_special_tokens=True)))
                                     for k in range(3)]
    assert batch.rewards.tolist() == [sum(r) for r in batch.step_rewards]
    assert batch.metadata["turn_state_keys"][0] == ["t0", "t1", "t2"] and batch.metadata["tool_calls"] == [3] * 4


def _env_seed(batch, b):
    from postrl.rollout.multiturn import env_seed

    return env_seed(3, batch.metadata["episode_id"][b])


def _prefix_len(batch, b, k):
    """Completion tokens before action k: up to the token after turn_ends[k-1] plus its observation."""
    if k == 0:
        return 0
    tid = batch.turn_ids[b].tolist()
    return max(i for i, t in enumerate(tid) if t == k - 1) + 1


def test_qwen_template_suffix_property():
    """Three turns on a Qwen2.5-style template: every context is the incremental rendering, the
    trained sequence equals the full conversation's rendering, nothing earlier is re-tokenised."""
    tok = qwen_style_tokenizer()
    actions = ["call A<|im_end|>", "call B<|im_end|>", "answer 42<|im_end|>"]
    engine = Recording(Scripted(tok, lambda t, r: actions[t]))
    make = load_env(f"{ENVS}:ToolEchoEnv", {"target": 3})
    batch = run_episodes(engine, make, rows(1), tok, SamplingParams(n=1, max_new_tokens=20),
                         Limits(max_turns=5, max_total_tokens=1000), seed=0)
    seq = batch.prompt_ids[0][batch.prompt_mask[0].bool()].tolist() + \
        batch.completion_ids[0][batch.completion_mask[0].bool()].tolist()
    messages = [{"role": "user", "content": "task 0"}]
    for k in range(3):
        # the context at turn k is the template's rendering of the conversation so far
        rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert engine.calls[k][0][0] == tok(rendered, add_special_tokens=False)["input_ids"]
        assert seq[:len(engine.calls[k][0][0])] == engine.calls[k][0][0]  # prefix stability
        messages.append({"role": "assistant", "content": actions[k].replace("<|im_end|>", "")})
        if k < 2:
            messages.append({"role": "tool", "content": f"result {k + 1}"})
    full = tok.apply_chat_template(messages, tokenize=False)
    assert full.endswith("<|im_end|>\n") and tok.decode(seq) == full[:-1]  # the model's last token is <|im_end|>
    assert seq == tok(full[:-1], add_special_tokens=False)["input_ids"]
    assert batch.metadata["success"] == [True] and batch.rewards.tolist() == [1.5]


def test_action_without_eos_gets_the_templates_closing():
    tok = qwen_style_tokenizer()
    engine = Scripted(tok, lambda t, r: "abcdefgh")  # cut by max_new_tokens=4: no <|im_end|>
    batch = run_episodes(engine, load_env(f"{ENVS}:ToolEchoEnv", {"target": 2}), rows(1), tok,
                         SamplingParams(n=1, max_new_tokens=4), Limits(), seed=0)
    L = int(batch.completion_mask[0].sum())
    text = tok.decode(batch.completion_ids[0, :L].tolist())
    assert text.startswith("abcd<|im_end|>\n<|im_start|>user\n<tool_response>\nresult 1\n</tool_response>"
                           "<|im_end|>\n<|im_start|>assistant\nabcd")
    assert batch.loss_mask[0, :L].tolist() == [1.0] * 4 + [0.0] * (L - 8) + [1.0] * 4


def test_plain_format_without_chat_template():
    tok = build_tokenizer()
    tok.chat_template = None
    engine = Scripted(tok, lambda t, r: f"a{t}")
    batch = run_episodes(engine, load_env(f"{ENVS}:ToolEchoEnv", {"target": 2}), rows(1), tok,
                         SamplingParams(n=1, max_new_tokens=4), Limits(), seed=0)
    assert tok.decode(batch.prompt_ids[0][batch.prompt_mask[0].bool()].tolist()) == "user: task 0\nassistant: "
    assert batch.metadata["transcript"][0] == "a0\ntool: result 1\nassistant: a1"


def test_limits_finish_reasons():
    tok = build_tokenizer()
    never = load_env(f"{ENVS}:NeverDoneEnv", {})
    b = run_episodes(Scripted(tok, lambda t, r: "xy"), never, rows(1), tok, SamplingParams(n=1, max_new_tokens=4),
                     Limits(max_turns=3), seed=0)
    assert b.metadata["finish_reason"] == ["max_turns"] and b.metadata["num_turns"] == [3]
    assert tok.decode(b.completion_ids[0][b.completion_mask[0].bool()].tolist()).endswith("xy")  # no trailing observation
    for budget in (9, 12, 20, 23):
        b = run_episodes(Scripted(tok, lambda t, r: "wxyz"), never, rows(1), tok, SamplingParams(n=1, max_new_tokens=4),
                         Limits(max_turns=50, max_total_tokens=budget), seed=0)
        total = int(b.prompt_mask.sum() + b.completion_mask.sum())
        assert b.metadata["finish_reason"] == ["max_tokens"] and total <= budget
        assert b.loss_mask[0, int(b.completion_mask.sum()) - 1] == 1  # it ends on an action


@pytest.mark.parametrize("env", ["SleepEnv", "AsyncSleepEnv"])
def test_turn_timeout_ends_the_episode(env):
    tok = build_tokenizer()
    t0 = time.monotonic()
    b = run_episodes(Scripted(tok, lambda t, r: "1"), load_env(f"{ENVS}:{env}", {"sleep_s": 5.0}), rows(2), tok,
                     SamplingParams(n=2, max_new_tokens=2), Limits(turn_timeout_s=0.3), seed=0)
    assert time.monotonic() - t0 < 2.0  # 4 concurrent steps, each abandoned at 0.3 s
    assert b.metadata["finish_reason"] == ["timeout"] * 4 and b.rewards.tolist() == [0.0] * 4
    assert b.metadata["num_turns"] == [1] * 4 and b.step_rewards == [[0.0]] * 4


def test_episode_timeout():
    tok = build_tokenizer()
    b = run_episodes(Scripted(tok, lambda t, r: "1"), load_env(f"{ENVS}:SleepEnv", {"sleep_s": 0.15, "target": 100}),
                     rows(1), tok, SamplingParams(n=1, max_new_tokens=2),
                     Limits(max_turns=100, turn_timeout_s=5, episode_timeout_s=0.5), seed=0)
    assert b.metadata["finish_reason"] == ["timeout"] and 2 <= b.metadata["num_turns"][0] <= 5
    assert b.rewards.item() == b.metadata["num_turns"][0] - 1  # earlier turns' rewards stand; the cut one is 0


def test_many_envs_step_concurrently():
    tok = build_tokenizer()
    t0 = time.monotonic()
    b = run_episodes(Scripted(tok, lambda t, r: "1"), load_env(f"{ENVS}:SleepEnv", {"sleep_s": 0.2, "target": 2}),
                     rows(16), tok, SamplingParams(n=4, max_new_tokens=2), Limits(), seed=0)
    assert b.size == 64 and b.metadata["finish_reason"] == ["done"] * 64
    assert time.monotonic() - t0 < 3.0  # sequential would be 64 * 2 * 0.2 = 25.6 s


def test_env_errors_name_row_and_turn():
    tok = build_tokenizer()
    with pytest.raises(RuntimeError, match=r"FailingEnv step \(dataset row 0, turn 0\) failed: ValueError: boom"):
        run_episodes(Scripted(tok, lambda t, r: "1"), load_env(f"{ENVS}:FailingEnv", {}), rows(1), tok,
                     SamplingParams(n=1, max_new_tokens=2), Limits(), seed=0)


def test_episodes_do_not_depend_on_micro_batching(tiny):
    tok, model = tiny
    make = load_env(f"{ENVS}:CountEnv", {"target": 3})
    params = SamplingParams(n=3, max_new_tokens=6)
    a, b = (run_episodes(HFEngine(model, tok, micro_batch_size=mb), make, rows(3), tok, params,
                         Limits(max_total_tokens=60), seed=11) for mb in (64, 2))
    for f in ("prompt_ids", "completion_ids", "loss_mask", "turn_ids"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert torch.allclose(a.behavior_logprobs, b.behavior_logprobs, atol=1e-5)
    assert a.metadata["finish_reason"] == b.metadata["finish_reason"]
    c = run_episodes(HFEngine(model, tok), make, rows(3), tok, params, Limits(max_total_tokens=60), seed=12)
    assert not torch.equal(a.completion_ids, c.completion_ids)  # the seed matters


def test_per_turn_layout_and_last_k(tiny):
    tok = build_tokenizer()
    engine = Recording(Scripted(tok, lambda t, r: f"a{t}"))
    b = run_episodes(engine, load_env(f"{ENVS}:CountEnv", {"target": 4}), rows(1), tok,
                     SamplingParams(n=2, max_new_tokens=4), Limits(layout="per_turn"), seed=0, history="last_k", history_k=1)
    assert b.size == 8 and b.step_ids.tolist() == [0, 1, 2, 3] * 2
    assert b.metadata["episode_id"] == [0] * 4 + [1] * 4 and b.group_ids.tolist() == [0] * 8
    assert b.state_keys == ["t0", "t1", "t2", "t3"] * 2
    for r in range(8):
        prompt = b.prompt_ids[r][b.prompt_mask[r].bool()].tolist()
        assert prompt == engine.calls[r % 4][0][r // 4]  # the context the policy saw
        text = tok.decode(b.completion_ids[r][b.completion_mask[r].bool()].tolist())
        assert text == f"a{r % 4}" and b.loss_mask[r].sum() == 2
    assert b.rewards.tolist() == [1.0 * 4] * 8 and b.step_rewards[0] == [1.0] * 4
    last = tok.decode(b.prompt_ids[3][b.prompt_mask[3].bool()].tolist())
    assert last.startswith("<|user|>task 0<|assistant|>a2") and "a1" not in last  # task + the last 1 turn


def test_history_registry_hand_computed():
    turns = [TurnRecord([], [10, 11], [0, 0], "x", "o", [20]), TurnRecord([], [12], [0], "y", "p", [21, 22])]
    h = HistoryInput([1, 2], turns, rng=None, renderer=None)
    assert HISTORIES["full"](h) == [1, 2, 10, 11, 20, 12, 21, 22]
    assert HISTORIES["last_k"](h, k=1) == [1, 2, 12, 21, 22]
    assert HISTORIES["last_k"](h, k=5) == [1, 2, 10, 11, 20, 12, 21, 22]
    with pytest.raises(ValueError, match="k >= 1"):
        HISTORIES["last_k"](h, k=0)


def test_history_policy_alt_context_and_info_reach_the_rows():
    class Ids(list):
        pass

    def policy(h, *, tag="x"):
        out = Ids(HISTORIES["full"](h))
        out.alt_ids = h.prompt_ids if h.turns else None  # a second context from turn 1 on
        out.info = {"history_len": len(h.turns), "tag": tag}
        return out

    HISTORIES.register("zz_test_alt", paper="(test)", summary="test")(policy)
    try:
        tok = build_tokenizer()
        b = run_episodes(Scripted(tok, lambda t, r: f"a{t}"), load_env(f"{ENVS}:CountEnv", {"target": 3}), rows(1),
                         tok, SamplingParams(n=1, max_new_tokens=4), Limits(layout="per_turn"), seed=0,
                         history="zz_test_alt", history_kwargs={"tag": "y"})
    finally:
        HISTORIES._entries.pop("zz_test_alt")
    prompt0 = b.prompt_ids[0][b.prompt_mask[0].bool()].tolist()
    assert b.metadata["alt_prompt_ids"][0] == prompt0  # turn 0 had none: its own prompt
    assert b.metadata["alt_prompt_ids"][2] == prompt0 and len(b.prompt_ids[2][b.prompt_mask[2].bool()]) > len(prompt0)
    assert b.metadata["history_len"] == [0, 1, 2] and b.metadata["tag"] == ["y"] * 3


def test_hcpo_history_runs_in_the_rollout():
    from postrl.rollout import history_hcpo  # noqa: F401  (registers the hcpo policy)

    tok = build_tokenizer()
    b = run_episodes(Scripted(tok, lambda t, r: f"a{t}"), load_env(f"{ENVS}:ToolEchoEnv", {"target": 3}), rows(1),
                     tok, SamplingParams(n=2, max_new_tokens=4), Limits(layout="per_turn"), seed=0, history="hcpo")
    assert b.size == 6 and len(b.metadata["alt_prompt_ids"]) == 6
