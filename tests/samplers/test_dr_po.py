"""DR-PO dataset resets: the reset rule, its statistics, state, errors, and a resumed run."""

import json
import shutil
from collections import Counter

import pytest
import torch
from helpers import tiny_rl_config, train_keeping_batches

from postrl.config import ConfigError, RLConfig, resolve
from postrl.data.loading import PromptRow
from postrl.learner.checkpoint import list_checkpoints
from postrl.learner.tiny import build_tokenizer
from postrl.samplers import SAMPLERS, Addition
from postrl.trainers import rl

TOK = build_tokenizer()  # one token per character


def _dr_po(answers, **kw):
    rows = [PromptRow(i, f"q{i}", a, {"answer": a}) for i, a in enumerate(answers)]
    return SAMPLERS["dr_po"](len(answers), 0, rows=rows, tokenizer=TOK, **kw)


def test_reset_prefixes_are_cut_inside_the_reference_and_short_references_never_reset():
    s = _dr_po(["42", "7", "123"], reset_prob=1.0)
    for _ in range(20):
        two, one, three = s.decorate([0, 1, 2])
        assert two == Addition(answer_prefix="4", tag="reset")  # L = 2: j ~ U{1} is always 1
        assert one == Addition()  # L = 1 < 2: no state to reset to
        assert three.answer_prefix in ("1", "12") and three.tag == "reset"  # L = 3: j in {1, 2}
    assert all(a == Addition() for a in _dr_po(["42", "123"], reset_prob=0.0).decorate([0, 1, 0, 1]))


def test_reset_frequency_is_reset_prob_and_the_cut_is_uniform():
    s = _dr_po(["123456"], reset_prob=0.3)
    draws = [a for _ in range(1000) for a in s.decorate([0] * 5)]  # 5000 seeded draws
    resets = [a.answer_prefix for a in draws if not a.empty]
    assert abs(len(resets) / 5000 - 0.3) < 0.02  # sd = sqrt(0.3 * 0.7 / 5000) = 0.0065: 3 sd
    counts = Counter(len(r) for r in resets)
    assert sorted(counts) == [1, 2, 3, 4, 5]  # j ~ U{1, ..., L-1}, L = 6
    assert all(abs(c / len(resets) - 0.2) < 0.03 for c in counts.values())  # sd ~ 0.0103 with ~1500 resets
    assert all("123456".startswith(r) for r in resets)


def test_state_round_trips_the_draw_counter_and_the_epoch():
    a = _dr_po([str(11 * i) for i in range(2, 9)], reset_prob=0.5)
    for _ in range(3):
        a.decorate(a.next(4))
    b = _dr_po([str(11 * i) for i in range(2, 9)], reset_prob=0.5)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict() == {"epoch": 1, "cursor": 5, "calls": 3}
    for _ in range(4):
        rows = a.next(3)
        assert rows == b.next(3) and a.decorate(rows) == b.decorate(rows)


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match=r"sampler.kwargs.reset_prob must be in \[0, 1\], got 1.5"):
        _dr_po(["12"], reset_prob=1.5)
    with pytest.raises(ValueError, match=r"training row 1 has no value in column 'solution'"):
        _dr_po(["12"], column="solution")
    with pytest.raises(ConfigError, match="distributed.max_off_policy_steps is 1"):
        resolve(RLConfig, {"sampler": {"name": "dr_po"}, "distributed": {"max_off_policy_steps": 1}})
    with pytest.raises(ConfigError, match="reset_probability"):
        resolve(RLConfig, {"sampler": {"name": "dr_po", "kwargs": {"reset_probability": 0.5}}})


def test_dr_po_rollouts_continue_the_prefix_which_is_scored_not_trained_and_resume_exactly(tmp_path, monkeypatch):
    cfg = tiny_rl_config(tmp_path, **{"sampler": {"name": "dr_po"}, "data.task_kwargs": {"level": 2},
                                      "rewards": [{"name": "hint_rewards:first_char_of_answer"}],
                                      "train.steps": 3, "checkpoint.keep_last": 3})
    _, seen = train_keeping_batches(monkeypatch, cfg)
    resets = 0
    for p, (idx, batch, result, _) in seen:
        for i, g in enumerate(batch.group_ids.tolist()):
            row, prefix = p.train_rows[idx[g]], batch.metadata["answer_prefix"][i]
            answer_ids = TOK.encode(prefix, add_special_tokens=False)
            prompt = batch.prompt_ids[i][batch.prompt_mask[i].bool()].tolist()
            assert prompt == p.train_ids[idx[g]] + answer_ids  # the templated prompt, then the prefix
            if len(row.answer) >= 2:  # reset_prob 1.0: every reference of >= 2 tokens is a reset
                assert row.answer.startswith(prefix) and 1 <= len(prefix) < len(row.answer)
                assert result.total[i] == 1.0  # the reward judged prefix + completion
                resets += 1
            else:
                assert prefix == ""
        assert torch.equal(batch.loss_mask, batch.completion_mask.float())  # no loss on prefix tokens
    assert resets >= 20
    # resume after the first checkpoint: same weights, same metrics
    killed = tmp_path / "killed"
    shutil.copytree(cfg.run_dir, killed)
    for ckpt in list_checkpoints(killed)[1:]:
        shutil.rmtree(ckpt)
    rl.train(cfg.model_copy(update={"output_dir": str(killed)}), resume=True)

    def metrics(run):
        return [{k: v for k, v in json.loads(x).items() if not k.startswith(("time/", "tokens_per_s", "memory/"))}
                for x in (run / "metrics.jsonl").read_text().splitlines()]

    assert metrics(killed) == metrics(cfg.run_dir) and len(metrics(killed)) == 3
    from safetensors.torch import load_file

    full, resumed = (load_file(str(list_checkpoints(r)[-1] / "model.safetensors")) for r in (cfg.run_dir, killed))
    assert all(torch.equal(full[k], resumed[k]) for k in full)
