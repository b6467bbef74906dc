"""CLPO: difficulty bands, the rewriters (arithmetic exhaustively, the policy with a fake generate, a user
function), the refill loop mixing originals and verified rewrites, state, errors, and a training run."""

import json
import re

import pytest
import torch
from helpers import kill_and_resume, make_batch, tiny_rl_config, train_keeping_batches

from postrl.config import ConfigError, RLConfig, resolve
from postrl.data.loading import PromptRow
from postrl.data.tasks import _level_problems
from postrl.rewards import RewardResult
from postrl.samplers import SAMPLERS, Addition, build_sampler
from postrl.samplers.clpo import difficulty
from postrl.samplers.clpo_rewrite import (DIVERSIFY_TEMPLATE, SIMPLIFY_TEMPLATE, arithmetic_forms,
                                          arithmetic_rewrite, extract_rewrite, make_rewriter)
from postrl.trainers.collect import Scored, refill


def _rows(questions, answers=None):
    answers = answers or [str(i) for i in range(len(questions))]
    return [PromptRow(i, [{"role": "user", "content": q}], a, {"answer": a})
            for i, (q, a) in enumerate(zip(questions, answers))]


def _clpo(questions, answers=None, generate=None, **kw):
    kw.setdefault("rewriter", "arithmetic")
    return SAMPLERS["clpo"](len(questions), kw.pop("seed", 0), rows=_rows(questions, answers), shuffle=False,
                            generate=generate, **kw)


ARITH = [f"{10 + 7 * i}+{20 + 3 * i}=" for i in range(10)]  # two-digit sums: each can be simplified


# ---------------------------------------------------------------------------------- difficulty bands
def test_bands_are_hard_up_to_0_3_medium_up_to_0_7_easy_above():
    assert [difficulty(a, 0.3, 0.7) for a in (0.0, 0.3, 0.31, 0.7, 0.71, 1.0)] == \
        ["hard", "hard", "medium", "medium", "easy", "easy"]
    s = _clpo(ARITH[:6])
    assert s.next(6) == [0, 1, 2, 3, 4, 5] and s.max_rounds == 7
    # groups of 10: pass rates 0, 0.3, 0.4, 0.7, 0.8, 1.0
    groups = [[1.0] * p + [0.0] * (10 - p) for p in (0, 3, 4, 7, 8, 10)]
    assert s.keep(groups) == [False, True, True, True, True, False]  # trained on iff 0 < acc < 1
    assert s.queue == [[0, "simplify", 0], [1, "simplify", 3], [2, "diversify", 4], [3, "diversify", 7]]
    s.update(list(range(6)), groups)
    assert s.metrics() == {"hard_frac": 2 / 6, "medium_frac": 2 / 6, "easy_frac": 2 / 6, "rewrite_groups": 0.0,
                           "rewrite_kept": 0.0, "rewrite_failed": 0.0, "rescued": 0.0,
                           "rows_with_kept_rewrite": 0.0}
    assert s.queue == [] and s.drawn == [] and not s.in_step


def test_the_queue_puts_simplified_problems_first_and_the_mode_picks_what_is_rewritten():
    medium, hard = [1.0, 0.0], [0.0, 0.0]
    s = _clpo(ARITH[:4])
    s.next(4)
    s.keep([medium, hard, medium, hard])
    assert [q[:2] for q in s.queue] == [[1, "simplify"], [3, "simplify"], [0, "diversify"], [2, "diversify"]]
    only_hard = _clpo(ARITH[:4], mode="hard_only")
    only_hard.next(4)
    only_hard.keep([medium, hard, medium, hard])
    assert [q[:2] for q in only_hard.queue] == [[1, "simplify"], [3, "simplify"]]
    only_medium = _clpo(ARITH[:4], mode="medium_only")
    only_medium.next(4)
    only_medium.keep([medium, hard, medium, hard])
    assert [q[:2] for q in only_medium.queue] == [[0, "diversify"], [2, "diversify"]]
    lenient = _clpo(ARITH[:1], threshold=0.5)
    lenient.next(1)
    assert lenient.keep([[0.5, 0.4, 0.4, 0.4]]) == [True] and lenient.queue == [[0, "simplify", 1]]  # acc 0.25


# ---------------------------------------------------------------------------------- arithmetic rewriter
def _value(text: str) -> int:
    """An independent reader of the rewritten forms: '-18-4=', '12 plus 34 =', '210+56=', ..."""
    m = re.fullmatch(r"(-?\d+) ?(\+|-|\*|plus|minus|times) ?(\d+) ?=", text)
    assert m is not None, text
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    return a + b if op in ("+", "plus") else a - b if op in ("-", "minus") else a * b


def test_hand_written_rewrites():
    assert [arithmetic_rewrite("12+34=", "diversify", v) for v in range(4)] == \
        ["34+12=", "12 + 34 =", "12 plus 34 =", "34+12="]  # the forms cycle with the row's rewrite count
    assert arithmetic_forms(5, "+", 5) == ["5 + 5 =", "5 plus 5 ="]  # swapping equal operands changes nothing
    assert arithmetic_rewrite("12-34=", "diversify", 0) == "-34+12="
    assert arithmetic_rewrite("7*38=", "diversify", 2) == "7 times 38 ="
    simplified = {"12+34=": "42+4=", "25+7=": "27+5=", "12+30=": "40+2=", "123+456=": "573+6=",
                  "12-34=": "-18-4=", "25-7=": "13+5=", "21-30=": "-10+1=", "7*38=": "210+56=",
                  "3+4=": None, "40-7=": None, "20+30=": None, "0*38=": None, "7*30=": None}
    assert {q: arithmetic_rewrite(q, "simplify", 0) for q in simplified} == simplified
    assert arithmetic_rewrite("What is 2+2?", "simplify", 0) is None


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_every_rewrite_of_every_problem_keeps_its_answer(level):
    unsimplifiable = 0
    for text, answer, _ in _level_problems(level):
        a, op, b = re.fullmatch(r"(\d+)([+*-])(\d+)=", text).groups()
        a, b = int(a), int(b)
        for v in range(3):
            form = arithmetic_rewrite(text, "diversify", v)
            assert form != text and _value(form) == int(answer), (text, form)
        simple = arithmetic_rewrite(text, "simplify", 0)
        d, e = b % 10, a % 10  # the ones digits that can be split off, and the term left with the rest:
        rest_b = {"+": a + b - d, "-": a - b + d, "*": a * (b - d)}[op]
        rest_a = {"+": a - e + b, "-": a - e - b, "*": (a - e) * b}[op]
        if not ((b >= 10 and d > 0 and rest_b != 0) or (a >= 10 and e > 0 and rest_a != 0)):
            assert simple is None, (text, simple)
            unsimplifiable += 1
            continue
        assert _value(simple) == int(answer), (text, simple)
        first, sign, second = re.fullmatch(r"(-?\d+)([+-])(\d+)=", simple).groups()
        assert "0" not in (first, second), (text, simple)  # a 0 term would leave the answer standing
        assert sign == "-" or answer not in (first, second), (text, simple)  # (x-d = d when x = 2d: no leak)
    # level 2 (a, b in 0..99): an operand cannot be split when it is 0..9 or 10, 20, ..., 90 (19 values each)
    assert level != 2 or unsimplifiable == 19 * 19


# ---------------------------------------------------------------------------------- policy rewriter
QUESTIONS = ["Find the sum of twelve and thirty-four.", "How many legs do three spiders have?",
             "What is the product of seven and thirty-eight?", "Compute the remainder of 100 divided by 7."]
ANSWERS = ["46", "24", "266", "2"]


def test_extracting_the_rewrite_from_the_policys_output():
    assert extract_rewrite("Sure!\n```text\nWhat is 2 plus 3, exactly?\n```\nDone.") == "What is 2 plus 3, exactly?"
    assert extract_rewrite("```\nAdd two and three.\n``` or ```text\nthe text block wins\n```") == "the text block wins"
    assert extract_rewrite("```\nAdd two and three now.\n```") == "Add two and three now."
    assert extract_rewrite("  no block at all, take it  ") == "no block at all, take it"
    assert extract_rewrite("```text\n0123456789\n```") is None  # 10 characters: too short
    assert extract_rewrite("```text\n0123456789A\n```") == "0123456789A"
    assert extract_rewrite("x" * 1999) == "x" * 1999 and extract_rewrite("x" * 2000) is None


def test_the_policy_rewriter_prompts_the_policy_and_only_verified_rewrites_are_kept():
    calls = []

    def generate(texts, seed, greedy, max_new_tokens=None, temperature=None):
        calls.append(dict(texts=texts, seed=seed, greedy=greedy, max_new_tokens=max_new_tokens,
                          temperature=temperature))
        outputs = {QUESTIONS[0]: "Here:\n```text\nAdd 12 and 34.\n```", QUESTIONS[3]: "short",
                   QUESTIONS[1]: f"```text\n{QUESTIONS[1]}\n```"}
        return [next(out for q, out in outputs.items() if q in t) for t in texts]

    s = _clpo(QUESTIONS, ANSWERS, generate=generate, rewriter="policy", seed=5)
    assert s.next(4) == [0, 1, 2, 3] and all(a.empty for a in s.decorate([0, 1, 2, 3]))
    assert s.keep([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]) == [False, True, False, False]
    assert s.next(3) == [0]  # 3's rewrite is too short, 1's is the question itself: both dropped
    assert calls == [dict(texts=[SIMPLIFY_TEMPLATE.format(question=QUESTIONS[0], answer="46"),
                                 SIMPLIFY_TEMPLATE.format(question=QUESTIONS[3], answer="2"),
                                 DIVERSIFY_TEMPLATE.format(question=QUESTIONS[1], answer="24")],
                          seed=5 * 1_000_003, greedy=False, max_new_tokens=400, temperature=0.7)]
    assert s.decorate([0]) == [Addition(prompt="Add 12 and 34.", tag="simplify")]
    assert s.keep([[1.0, 0.0]]) == [True]  # solved once with the original answer, not always: verified
    assert s.next(3) == [] and len(calls) == 1  # nothing left: the refill stops
    s.update([1, 0, 2, 3], [[1.0, 0.0]] * 4)
    assert s.metrics() == {"hard_frac": 0.5, "medium_frac": 0.25, "easy_frac": 0.25, "rewrite_groups": 1.0,
                           "rewrite_kept": 1.0, "rewrite_failed": 2.0, "rescued": 1.0, "rows_with_kept_rewrite": 1.0}
    # the next step's rewrite of row 0 is sampled with the next seed; an always-solved rewrite is rejected
    s.next(4)
    s.keep([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    assert s.next(4) == [0] and calls[-1]["seed"] == 5 * 1_000_003 + 1
    assert s.keep([[1.0, 1.0]]) == [False]
    s.update([0, 1, 2, 3], [[1.0, 1.0]] * 4)
    assert s.metrics()["rewrite_kept"] == 0.0 and s.metrics()["rewrite_groups"] == 1.0
    assert s.state_dict()["rows"] == [[0, 2, 1], [1, 1, 0], [3, 1, 0]]  # [row, rewrites tried, kept]


def test_a_user_function_rewrites_and_bad_ones_are_named(tmp_path):
    code = tmp_path / "rewriters.py"
    code.write_text("def rw(question, answer, kind):\n"
                    "    return None if kind == 'diversify' else question.replace('=', ' (simpler)=')\n"
                    "def bad_type(question, answer, kind):\n    return 3\n"
                    "def one_arg(question):\n    return question\n")
    rewrite = make_rewriter(f"{code}:rw")
    assert rewrite(["1+2=", "3+4="], ["3", "7"], ["simplify", "diversify"], [0, 0], 0) == ["1+2 (simpler)=", None]
    s = _clpo(["12+34=", "5+6="], rewriter=f"{code}:rw")
    s.next(2)
    s.keep([[0.0, 0.0], [0.0, 0.0]])
    assert s.next(2) == [0, 1] and [a.prompt for a in s.decorate([0, 1])] == ["12+34 (simpler)=", "5+6 (simpler)="]
    with pytest.raises(TypeError, match=r"rewriter='.*:bad_type' returned int for a simplify rewrite"):
        make_rewriter(f"{code}:bad_type")(["1+2="], ["3"], ["simplify"], [0], 0)
    with pytest.raises(ValueError, match=r"must take \(question, answer, kind\) positionally"):
        make_rewriter(f"{code}:one_arg")
    with pytest.raises(AttributeError, match="no attribute 'missing'; callables defined there: bad_type, one_arg, rw"):
        make_rewriter(f"{code}:missing")


# ---------------------------------------------------------------------------------- the step's refill loop
def test_the_refill_loop_trains_kept_originals_then_verified_rewrites_then_tops_up():
    questions = ["12+34=", "56+7=", "3+4=", "25+25=", "60+9="]
    s = _clpo(questions)
    script = {(0, ""): [0.0, 0.0], (1, ""): [1.0, 0.0], (2, ""): [0.0, 0.0], (3, ""): [1.0, 1.0],
              (0, "simplify"): [1.0, 0.0], (1, "diversify"): [1.0, 1.0]}
    prompts = []

    def scored(rows):
        adds = s.decorate(rows)
        prompts.extend((r, a.tag, a.prompt) for r, a in zip(rows, adds))
        rewards_G = [script[(r, a.tag)] for r, a in zip(rows, adds)]
        total = torch.tensor([x for g in rewards_G for x in g])
        batch = make_batch(total.tolist(), [g for g in range(len(rows)) for _ in range(2)])
        return Scored(list(rows), batch, RewardResult(total, {"r": total.clone()}))

    first = scored(s.next(4))
    asked = []

    def more(k, round_):  # as trainers/collect.py: an empty draw ends the refill
        asked.append(k)
        new = s.next(k)
        return scored(new) if new else None

    out, info = refill(first, more, s.keep, want=4, max_rounds=s.max_rounds)
    # round 1 keeps 1 (medium); round 2 asks for 3: 0 simplified, 2 cannot be (3+4=), 1 diversified;
    # round 3 asks for 2 but nothing is left; the top-up takes rejected groups in generation order
    assert asked == [3, 2] and s.max_rounds == 5
    assert prompts[4:] == [(0, "simplify", "42+4="), (1, "diversify", "7+56=")]
    assert info == {"dynamic_sampling/rounds": 2.0, "dynamic_sampling/kept_groups": 2.0,
                    "dynamic_sampling/generated_groups": 6.0}
    assert out.idx == [1, 0, 0, 2] and out.result.total.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    s.update(out.idx, out.rewards_G())
    assert s.metrics() == {"hard_frac": 0.5, "medium_frac": 0.25, "easy_frac": 0.25, "rewrite_groups": 2.0,
                           "rewrite_kept": 1.0, "rewrite_failed": 1.0, "rescued": 1.0, "rows_with_kept_rewrite": 1.0}


# ---------------------------------------------------------------------------------- state and errors
def test_state_round_trips_mid_step_and_across_steps():
    def fresh():
        return SAMPLERS["clpo"](10, 3, rows=_rows(ARITH), rewriter="arithmetic", generate=None)

    def step(s, rewards):
        idx = s.next(4)
        s.keep(rewards)
        more = s.next(2)
        adds = s.decorate(more)
        s.keep([[1.0, 0.0]] * len(more))
        s.update(idx, rewards)
        return idx, more, adds

    a = fresh()
    first = a.next(4)
    a.keep([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = fresh()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.next(2) == a.next(2) == [first[0], first[3]] and b.decorate([first[0], first[3]]) == a.decorate(
        [first[0], first[3]])
    for s in (a, b):
        s.keep([[1.0, 0.0], [0.0, 0.0]])
        s.update(first, [[0.0, 0.0]] * 4)
    medium = [[1.0, 0.0, 0.0]] * 4  # acc 1/3: every problem is diversified, the form rotating per row
    assert [step(a, medium) for _ in range(4)] == [step(b, medium) for _ in range(4)]
    assert a.state_dict() == b.state_dict() and a.metrics() == b.metrics()
    assert a.state_dict()["rows"][0] == [0, 1, 1] and a.state_dict()["calls"] == 5
    c = fresh()
    c.load_state_dict(a.state_dict())
    assert [step(c, medium) for _ in range(3)] == [step(a, medium) for _ in range(3)]
    with pytest.raises(ValueError, match="counts rewrites of row 12 but the training set has 10 rows"):
        fresh().load_state_dict({**a.state_dict(), "rows": [[11, 1, 0]]})


def test_bad_settings_name_the_key_the_row_and_the_fix():
    with pytest.raises(ValueError, match="sampler.kwargs.rewriter='gpt' is not a rewriter; use 'policy'"):
        _clpo(ARITH, rewriter="gpt")
    with pytest.raises(ValueError, match=r"sampler.kwargs.mode='all' is out of range; it must be one of both, "
                                         r"hard_only, medium_only"):
        _clpo(ARITH, mode="all")
    with pytest.raises(ValueError, match=r"sampler.kwargs.medium_upper=0.2 is out of range; it must be in "
                                         r"\[hard_upper=0.3, 1\)"):
        _clpo(ARITH, medium_upper=0.2)
    with pytest.raises(ValueError, match="sampler.kwargs.rewrite_max_tokens=0"):
        _clpo(ARITH, rewrite_max_tokens=0)
    with pytest.raises(ValueError, match=r"sampler.kwargs.simplify_template must contain \{question\}"):
        _clpo(ARITH, simplify_template="Simplify it.")
    with pytest.raises(ValueError, match=r"sampler.kwargs.diversify_template may only use the fields"):
        _clpo(ARITH, diversify_template="{question} in {language}")
    with pytest.raises(ValueError, match="rewriter='policy' samples rewrites from the policy, which needs the "
                                         "trainer's generate callable"):
        _clpo(ARITH, rewriter="policy")
    with pytest.raises(ValueError, match=r"training row 2 asks 'What is 2\+2\?'. Use rewriter: policy"):
        _clpo(["1+1=", "What is 2+2?"])
    with pytest.raises(ValueError, match=r"training row 1 has no value in column 'solution' \(sampler.kwargs.column\)"):
        _clpo(ARITH, column="solution")
    with pytest.raises(RuntimeError, match="decorate must follow next"):
        _clpo(ARITH).decorate([1])
    with pytest.raises(ConfigError, match="takes no parameter 'rewrite'"):
        resolve(RLConfig, {"sampler": {"name": "clpo", "kwargs": {"rewrite": "arithmetic"}}})
    with pytest.raises(ConfigError, match="max_off_policy_steps"):
        resolve(RLConfig, {"sampler": {"name": "clpo"}, "distributed": {"max_off_policy_steps": 1}})
    with pytest.raises(ConfigError, match="rollout.n >= 2"):
        resolve(RLConfig, {"sampler": {"name": "clpo"}, "rollout": {"n": 1}})
    assert build_sampler("clpo", {"rewriter": "arithmetic"}, 3, 0, rows=_rows(ARITH[:3])).dataset_size == 3


def test_a_rewritten_prompt_replaces_the_last_user_message_and_a_hint_follows_it():
    from postrl.data.loading import DataError
    from postrl.trainers.hints import with_hint, with_prompt

    chat = PromptRow(0, [{"role": "system", "content": "S"}, {"role": "user", "content": "12+34="},
                         {"role": "assistant", "content": "A"}], "46", {"answer": "46"})
    rewritten = with_hint(with_prompt(chat, "42+4="), " H")
    assert [m["content"] for m in rewritten.prompt] == ["S", "42+4= H", "A"] and rewritten.columns["answer"] == "46"
    assert chat.prompt[1]["content"] == "12+34=" and with_prompt(chat, "") is chat  # the dataset row is untouched
    assert with_prompt(PromptRow(1, "12+34=", "46", {}), "34+12=").prompt == "34+12="
    with pytest.raises(DataError, match="row 3: only text content can be rewritten"):
        with_prompt(PromptRow(2, [{"role": "user", "content": [{"type": "image"}]}], "4", {}), "2+2=")


# ---------------------------------------------------------------------------------- the trainer
ANSWER_PARITY = """
def answer_parity(prompts, completions, completion_ids, answer, **kwargs):
    # a 0/1 reward a random model's samples split on, which depends on the row's answer column
    return [float((sum(ids) + int(a)) % 2 == 0) for ids, a in zip(completion_ids, answer)]
"""


@pytest.mark.slow
def test_clpo_trains_on_restructured_prompts_scored_against_the_original_answer(tmp_path, monkeypatch):
    reward = tmp_path / "parity.py"
    reward.write_text(ANSWER_PARITY)
    cfg = tiny_rl_config(tmp_path, **{"sampler": {"name": "clpo", "kwargs": {"rewriter": "arithmetic"}},
                                      "data.task_kwargs": {"level": 2}, "train.steps": 3,
                                      "rewards": [{"name": f"{reward}:answer_parity"}]})
    summary, seen = train_keeping_batches(monkeypatch, cfg)
    assert "last/sampler/rewrite_groups" in summary and "last/hints/fraction" in summary
    rewritten = 0
    for p, (idx, batch, result, metrics) in seen:
        for r in range(batch.size):
            row = p.train_rows[idx[int(batch.group_ids[r])]]
            ids = batch.completion_ids[r][batch.completion_mask[r].bool()].tolist()
            # the reward read the row's own answer, for original and rewritten prompts alike
            assert result.per_function["answer_parity"][r] == float((sum(ids) + int(row.answer)) % 2 == 0)
            text, tag = batch.metadata["rewritten_prompt"][r], batch.metadata["hint_tag"][r]
            prompt = p.tokenizer.decode(batch.prompt_ids[r][batch.prompt_mask[r].bool()])
            question = row.prompt[0]["content"]
            if not text:
                assert prompt == f"<|user|>{question}<|assistant|>" and tag == ""
                continue
            rewritten += 1
            assert prompt == f"<|user|>{text}<|assistant|>"  # the rewrite replaced the question in the ids
            assert _value(text) == int(row.answer)
            assert text == arithmetic_rewrite(question, "simplify", 0) if tag == "simplify" else \
                text in arithmetic_forms(*_operands(question))
    assert rewritten > 0  # some steps trained on verified rewrites (seeded, so always the same ones)
    assert torch.equal(seen[-1][1][1].loss_mask, seen[-1][1][1].completion_mask.float())


def _operands(question):
    a, op, b = re.fullmatch(r"(\d+)([+*-])(\d+)=", question).groups()
    return int(a), op, int(b)


def test_the_policy_text_generator_renders_a_user_turn_and_decodes(tmp_path, monkeypatch):
    from postrl.trainers import rl
    from postrl.trainers.policy_text import policy_text

    cfg = tiny_rl_config(tmp_path, **{"sampler": {"name": "clpo", "kwargs": {
        "rewriter": "policy", "rewrite_max_tokens": 6, "simplify_template": "Simplify: {question}"}}})
    p = rl.build(cfg)
    generate = policy_text(cfg, p.tokenizer, p.rollouts, p.train_rows)
    greedy = generate(["12+34=", "5+5="], 11, True, max_new_tokens=5)
    assert len(greedy) == 2 and all(isinstance(t, str) for t in greedy)
    assert greedy == generate(["12+34=", "5+5="], 12, True, max_new_tokens=5)  # greedy: the seed does not matter
    seen = {}
    real = p.rollouts.generate

    def spy(ids, params, seed):
        batch = real(ids, params, seed)
        seen.update(prompts=[p.tokenizer.decode(x) for x in ids], params=params, seed=seed,
                    text=p.tokenizer.decode(batch.completion_ids[0][batch.completion_mask[0].bool()],
                                            skip_special_tokens=True))
        return batch

    monkeypatch.setattr(p.rollouts, "generate", spy)
    out = p.sampler.rewriter(["12+34="], ["46"], ["simplify"], [0], 3)  # the sampler's rewriter is wired to it
    assert seen["prompts"] == ["<|user|>Simplify: 12+34=<|assistant|>"]
    assert (seen["params"].n, seen["params"].max_new_tokens, seen["params"].temperature, seen["params"].stop,
            seen["params"].greedy, seen["seed"]) == (1, 6, 0.7, [], False, 3)
    assert out == [extract_rewrite(seen["text"])]


@pytest.mark.slow
def test_a_killed_and_resumed_clpo_run_ends_with_the_same_weights_and_state(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from postrl.learner.checkpoint import STATE_FILE, list_checkpoints
    from postrl.trainers import rl

    reward = tmp_path / "parity.py"
    reward.write_text(ANSWER_PARITY)

    def config(name):
        return tiny_rl_config(tmp_path / name, **{"sampler": {"name": "clpo", "kwargs": {"rewriter": "arithmetic"}},
                                                 "data.task_kwargs": {"level": 2}, "train.steps": 4,
                                                 "checkpoint.keep_last": 4,
                                                 "rewards": [{"name": f"{reward}:answer_parity"}]})

    full, broken = config("full"), config("broken")
    rl.train(full)
    kill_and_resume(monkeypatch, rl, "rl_step", lambda resume: rl.train(broken, resume=resume), kill_at=3)
    last = [list_checkpoints(c.run_dir)[-1] for c in (full, broken)]
    assert last[0].name == last[1].name == "step_000004"
    x, y = (load_file(str(c / "model.safetensors")) for c in last)
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    a, b = (json.loads((c / STATE_FILE).read_text())["sampler"] for c in last)
    assert a == b and a["calls"] > 0 and a["rows"]  # rewrites were made, and their counters resumed
