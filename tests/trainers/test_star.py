"""STaR rationalisation (trainers/star.py): hinted prompts, which retries are kept, and that the
trained example pairs the ORIGINAL prompt (no hint) with the completion sampled after the hint."""

import pytest

from postrl.config import DataSection, RewardSpec
from postrl.data.chat import encode_prompts
from postrl.data.loading import DataError, PromptRow
from postrl.learner.tiny import build_tokenizer
from postrl.rewards import RewardSet
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams
from postrl.trainers.star import hinted_prompt, rationalize

TEMPLATE = "{prompt} (answer: {answer})"


def row(i, text, answer, **cols):
    return PromptRow(i, [{"role": "user", "content": text}], answer, {"answer": answer, **cols})


def test_the_hint_replaces_the_last_user_turn_and_leaves_the_row_alone():
    r = PromptRow(0, [{"role": "system", "content": "s"}, {"role": "user", "content": "1+3="}], "4",
                  {"answer": "4", "level": 1})
    assert hinted_prompt(r, TEMPLATE + " L{level}") == [{"role": "system", "content": "s"},
                                                         {"role": "user", "content": "1+3= (answer: 4) L1"}]
    assert r.prompt[1]["content"] == "1+3="  # a copy was changed
    assert hinted_prompt(PromptRow(0, "1+3=", "4", {}), TEMPLATE) == "1+3= (answer: 4)"


def test_hint_errors_name_the_field_and_the_fix():
    with pytest.raises(DataError, match=r"row 1: raft.hint_template uses \{hint\} .* available fields: answer, "
                                        r"level, prompt"):
        hinted_prompt(row(0, "1+3=", "4", level=1), "{prompt}{hint}")
    with pytest.raises(DataError, match="row 3: raft.rationalize needs the reference answer.*data.columns.answer"):
        hinted_prompt(PromptRow(2, "1+3=", None, {}), TEMPLATE)


class HintEngine:
    """Returns fixed completions (+ EOS) per prompt and records the prompts it was asked for."""

    def __init__(self, tok, texts):
        self.tok, self.texts, self.prompts = tok, texts, []

    def generate(self, prompt_ids, params, seed=0, *, first_index=0):
        self.prompts.append(prompt_ids)
        comps = [self.tok(t, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
                 for ts in self.texts for t in ts]
        n = len(self.texts[0])
        return RolloutBatch.from_token_lists([p for p in prompt_ids for _ in range(n)], comps, self.tok.pad_token_id,
                                             group_ids=[g for g in range(len(prompt_ids)) for _ in range(n)])


def test_rationalisation_retries_failed_prompts_with_the_hint_and_trains_without_it():
    tok, data = build_tokenizer(), DataSection()
    rows = [row(0, "1+3=", "4"), row(1, "3+4=", "7"), row(2, "2+2=", "4")]
    ids, _ = encode_prompts(tok, rows, data)
    # prompt 0 (answer 4): "9" wrong, "4" right; prompt 2 (answer 4): "1", "2" both wrong
    engine = HintEngine(tok, [["9", "4"], ["1", "2"]])
    out = rationalize(engine, tok, RewardSet([RewardSpec(name="exact_match")]), rows, ids, [0, 2],
                      SamplingParams(n=2), data_cfg=data, template=TEMPLATE, keep="all_above", threshold=1.0, seed=3)
    # only the failed prompts were retried, each with the hint in its user turn
    assert [tok.decode(p) for p in engine.prompts[0]] == ["<|user|>1+3= (answer: 4)<|assistant|>",
                                                          "<|user|>2+2= (answer: 4)<|assistant|>"]
    # one kept example: prompt 0's ORIGINAL ids (no hint), then the sampled "4" + EOS, loss on those 2 tokens
    four = tok("4", add_special_tokens=False)["input_ids"]
    assert out.examples == [(ids[0] + four + [tok.eos_token_id], [0] * len(ids[0]) + [1, 1])]
    assert tok.decode(out.examples[0][0]) == "<|user|>1+3=<|assistant|>4<|end|>"
    assert (out.failed, out.solved) == (2, 1)


def test_nothing_failed_samples_nothing():
    tok = build_tokenizer()
    engine = HintEngine(tok, [["4"]])
    out = rationalize(engine, tok, RewardSet([RewardSpec(name="exact_match")]), [row(0, "1+3=", "4")], [[1]], [],
                      SamplingParams(n=1), data_cfg=DataSection(), template=TEMPLATE, keep="best", threshold=1.0,
                      seed=0)
    assert (out.examples, out.failed, out.solved, engine.prompts) == ([], 0, 0, [])
