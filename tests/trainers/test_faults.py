"""Faults a run survives or stops on cleanly (trainers/faults.py): the non-finite streak, SIGINT /
SIGTERM at a step boundary, a damaged latest checkpoint on resume; in `postrl train` (rl.py)
and in the supervised loop (fit_loop.py, here through `postrl sft`)."""

import json
import math
import os
import signal

import pytest
import torch
from helpers import TINY_MODEL, same_final_weights, tiny_rl_config

from postrl.learner import learner as learner_mod
from postrl.learner.checkpoint import list_checkpoints, save_checkpoint
from postrl.learner.checkpoint_manifest import MANIFEST_FILE
from postrl.run_stop import Interrupted, NonFiniteStop
from postrl.trainers import rl
from postrl.trainers.faults import FAULTS_FILE, RunGuard, fault_counts, resume_checkpoint

TOKEN_REWARD = [{"name": "tiny_rewards:token_id_mean"}]  # non-zero advantages: every step moves the weights


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _faults(run_dir):
    return [json.loads(x) for x in (run_dir / FAULTS_FILE).read_text().splitlines()]


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------ the guard
def test_guard_counts_a_streak_of_nonfinite_steps_and_resets_on_a_finite_one(tmp_path):
    g = RunGuard(tmp_path, max_nonfinite_steps=3)
    seen = [g.after_step(s, m) for s, m in enumerate([{"loss": 1.0, "grad_norm": 2.0}, {"loss": math.nan},
                                                      {"grad_norm": math.inf, "loss": 0.5}, {"loss": 0.1}], 1)]
    assert seen == [{"nonfinite/streak": n} for n in (0, 1, 2, 0)]
    assert not g.stopping()
    assert fault_counts(tmp_path) == {"faults/nonfinite_step": 2}
    assert _faults(tmp_path)[1]["values"] == {"grad_norm": "inf"}


def test_guard_stops_at_the_kth_nonfinite_step_in_a_row_and_its_count_survives_a_resume(tmp_path):
    g = RunGuard(tmp_path, max_nonfinite_steps=3)
    for step in (1, 2):
        g.after_step(step, {"loss": math.nan})
    resumed = RunGuard(tmp_path, max_nonfinite_steps=3)
    resumed.load_state_dict(g.state_dict())  # {"nonfinite_streak": 2} in the checkpoint
    assert not resumed.stopping()
    resumed.after_step(3, {"grad_norm": math.nan})
    assert resumed.stopping()
    with pytest.raises(NonFiniteStop, match=r"3 steps in a row \(to step 3\).*max_nonfinite_steps=3") as err:
        resumed.stop(3, tmp_path / "step_000003")
    assert err.value.exit_code == 3 and "step_000003 saved" in str(err.value)


def test_the_first_signal_only_asks_to_stop_and_handlers_are_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with RunGuard(tmp_path, max_nonfinite_steps=5) as g:
        assert not g.stopping()
        os.kill(os.getpid(), signal.SIGTERM)  # handled at once in the main thread: no exit
        assert g.stopping()
        with pytest.raises(Interrupted, match="SIGTERM after step 4") as err:
            g.stop(4, None)
    assert err.value.exit_code == 143 and signal.getsignal(signal.SIGTERM) is before
    assert fault_counts(tmp_path) == {"faults/interrupted": 1}


def test_a_second_sigint_interrupts_at_once(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with RunGuard(tmp_path, max_nonfinite_steps=5):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)


# --------------------------------------------------------------------- resume after damage
def _tiny_checkpoints(run_dir, steps):
    from postrl.learner.tiny import build_model, build_tokenizer

    tok = build_tokenizer()
    model = build_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    return [save_checkpoint(run_dir, s, model=model, tokenizer=tok, keep_last=len(steps)) for s in steps]


def test_resume_checkpoint_moves_a_damaged_latest_aside_and_logs_the_fallback(tmp_path):
    _, last = _tiny_checkpoints(tmp_path, [1, 2])
    (last / "model.safetensors").write_bytes(b"\0" * 10)
    with pytest.warns(UserWarning, match=r"step_000002: damaged checkpoint \(model.safetensors: expected \d+ bytes, "
                                         r"found 10.*resuming from step_000001"):
        assert resume_checkpoint(tmp_path).name == "step_000001"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000001"]
    assert (tmp_path / "checkpoints" / "corrupt_step_000002" / MANIFEST_FILE).exists()  # kept to inspect
    (event,) = _faults(tmp_path)
    assert event["kind"] == "checkpoint_fallback" and event["using"] == "step_000001"
    assert event["problems"][0].startswith("model.safetensors: expected")


def test_resume_with_every_checkpoint_damaged_is_refused(tmp_path):
    (only,) = _tiny_checkpoints(tmp_path, [1])
    (only / "optimizer.pt").unlink(missing_ok=True)
    (only / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match=r"every checkpoint is damaged .*tokenizer.json: expected"):
        resume_checkpoint(tmp_path)
    assert list_checkpoints(tmp_path) == [only]  # still there: the next --resume refuses again


def test_rl_resume_falls_back_past_a_truncated_latest_checkpoint_to_the_same_weights(tmp_path):
    over = {"rewards": TOKEN_REWARD, "train.steps": 4, "checkpoint.keep_last": 2}
    straight = tiny_rl_config(tmp_path / "a", **over)
    rl.train(straight)
    cfg = tiny_rl_config(tmp_path / "b", **over)
    rl.train(cfg)
    last = list_checkpoints(cfg.run_dir)[-1]
    with open(last / "optimizer.pt", "r+b") as f:  # a crash of the storage, not of postrl
        f.truncate(100)
    with pytest.warns(UserWarning, match="optimizer.pt: expected"):
        summary = rl.train(cfg, resume=True)  # from step 3: step 4 is trained again
    assert summary["faults/checkpoint_fallback"] == 1
    assert _same(_weights(list_checkpoints(straight.run_dir)[-1]), _weights(list_checkpoints(cfg.run_dir)[-1]))
    assert [m["step"] for m in _metrics(cfg.run_dir)] == [1, 2, 3, 4]


# -------------------------------------------------------------------------- non-finite steps
def _poison_from(monkeypatch, first_bad: int, last_bad: int = 10**9) -> dict:
    """Steps first_bad..last_bad (1-based) get a NaN loss, so a NaN gradient: the learner skips them.
    Returns {step: the policy's weights after it} (0: before the first step)."""
    real_step, real_agg, now, after = rl.rl_step, learner_mod.aggregate, {"step": 0}, {}

    def step(p, i):
        now["step"] = i + 1
        if i == 0:
            after[0] = {k: v.detach().clone() for k, v in p.learner.model.state_dict().items()}
        out = real_step(p, i)
        after[i + 1] = {k: v.detach().clone() for k, v in p.learner.model.state_dict().items()}
        return out

    def aggregate(*a, **k):
        out = real_agg(*a, **k)
        return out * math.nan if first_bad <= now["step"] <= last_bad else out

    monkeypatch.setattr(rl, "rl_step", step)
    monkeypatch.setattr(learner_mod, "aggregate", aggregate)
    return after


def test_rl_stops_after_k_nonfinite_steps_in_a_row_with_a_checkpoint_of_the_last_good_weights(tmp_path, monkeypatch):
    cfg = tiny_rl_config(tmp_path, **{"rewards": TOKEN_REWARD, "train.steps": 8, "train.max_nonfinite_steps": 3,
                                      "checkpoint.every": 10, "checkpoint.keep_last": 5})
    after = _poison_from(monkeypatch, first_bad=2)
    with pytest.warns(UserWarning, match=r"step 2: non-finite loss nan, grad_norm nan; the update was skipped "
                                         r"\(1 in a row; the run stops after 3\)"):
        with pytest.raises(NonFiniteStop, match=r"3 steps in a row \(to step 4\)"):
            rl.train(cfg)
    (saved,) = list_checkpoints(cfg.run_dir)  # written by the stop: checkpoint.every is 10
    assert saved.name == "step_000004"
    assert json.loads((saved / "trainer_state.json").read_text())["nonfinite_streak"] == 3
    lines = _metrics(cfg.run_dir)
    assert [m["nonfinite/streak"] for m in lines] == [0, 1, 2, 3]
    assert lines[0]["loss"] is not None and all(m["loss"] is None and m["grad_norm"] is None for m in lines[1:])
    kinds = [e["kind"] for e in _faults(cfg.run_dir)]
    assert kinds == ["nonfinite_step"] * 3 + ["nonfinite_stop"]
    # the skipped updates left the weights of step 1 (and step 1 did move them)
    stored = _weights(saved)
    assert all(torch.equal(stored[k], after[1][k]) for k in stored)
    assert all(torch.equal(after[1][k], after[4][k]) for k in stored)
    assert not all(torch.equal(after[0][k], after[1][k]) for k in stored)


def test_rl_isolated_nonfinite_steps_are_skipped_reported_and_the_run_continues(tmp_path, monkeypatch):
    cfg = tiny_rl_config(tmp_path, **{"rewards": TOKEN_REWARD, "train.steps": 4, "train.max_nonfinite_steps": 2})
    _poison_from(monkeypatch, first_bad=2, last_bad=2)
    with pytest.warns(UserWarning, match="step 2: non-finite"):
        summary = rl.train(cfg)
    assert summary["faults/nonfinite_step"] == 1 and summary["last/nonfinite/streak"] == 0
    assert [m["nonfinite/streak"] for m in _metrics(cfg.run_dir)] == [0, 1, 0, 0]


# --------------------------------------------------------------------------- signals in a loop
def _signal_at(monkeypatch, signum: int, at_step: int):
    real, calls = rl.rl_step, []

    def step(p, i):
        out = real(p, i)
        calls.append(i)
        if len(calls) == at_step:
            os.kill(os.getpid(), signum)  # arrives mid-loop; the step in progress finishes
        return out

    monkeypatch.setattr(rl, "rl_step", step)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_rl_signal_saves_at_the_step_boundary_and_resume_ends_with_the_same_weights(tmp_path, monkeypatch,
                                                                                   signum, code):
    over = {"rewards": TOKEN_REWARD, "train.steps": 4, "checkpoint.every": 10}
    straight = tiny_rl_config(tmp_path / "a", **over)
    rl.train(straight)
    cfg = tiny_rl_config(tmp_path / "b", **over)
    _signal_at(monkeypatch, signum, at_step=2)
    handler = signal.getsignal(signum)
    with pytest.raises(Interrupted) as err:
        rl.train(cfg)
    assert err.value.exit_code == code
    assert [p.name for p in list_checkpoints(cfg.run_dir)] == ["step_000002"]  # not due: saved for the signal
    assert signal.getsignal(signum) is handler  # the run's handler is gone
    monkeypatch.undo()
    summary = rl.train(cfg, resume=True)
    assert summary["faults/interrupted"] == 1
    assert _same(_weights(list_checkpoints(straight.run_dir)[-1]), _weights(list_checkpoints(cfg.run_dir)[-1]))


# ------------------------------------------------------------------------ the supervised loop
def _sft_config(tmp_path, **train):
    from postrl.config import SFTConfig, resolve

    return resolve(SFTConfig, {"output_dir": str(tmp_path), "model": TINY_MODEL,
                               "data": {"source": "task:arithmetic", "task_kwargs": {"level": 1}},
                               "train": {"steps": 4, "batch_size": 8, "micro_batch_size": 8, "lr": 1e-3, **train},
                               "checkpoint": {"every": 10}, "logging": {"progress": False}}, [], source="test")


def test_sft_stops_after_k_nonfinite_gradients_with_a_checkpoint(tmp_path, monkeypatch):
    from postrl.trainers import fit_loop, sft

    cfg = _sft_config(tmp_path, max_nonfinite_steps=2)
    real_fit, initial = fit_loop.fit, {}

    def fit_with_nan_grads(model, tokenizer, examples, cfg_, *, step_fn, **kw):
        initial.update({k: v.clone() for k, v in model.state_dict().items()})

        def step(batch):
            out = step_fn(batch)
            next(model.parameters()).grad.fill_(math.nan)
            return out

        return real_fit(model, tokenizer, examples, cfg_, step_fn=step, **kw)

    monkeypatch.setattr(sft, "fit", fit_with_nan_grads)
    with pytest.warns(UserWarning, match="step 1: non-finite grad_norm nan"):
        with pytest.raises(NonFiniteStop, match=r"2 steps in a row \(to step 2\)"):
            sft.train(cfg)
    (saved,) = list_checkpoints(cfg.run_dir)
    stored = _weights(saved)
    assert saved.name == "step_000002" and all(torch.equal(stored[k], initial[k]) for k in stored)  # nothing applied


def test_sft_sigterm_saves_and_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    from postrl.trainers import fit_loop, sft

    sft.train(_sft_config(tmp_path / "a"))
    cfg = _sft_config(tmp_path / "b")
    real_fit = fit_loop.fit

    def fit_signalled(model, tokenizer, examples, cfg_, *, step_fn, **kw):
        calls = []

        def step(batch):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return step_fn(batch)

        return real_fit(model, tokenizer, examples, cfg_, step_fn=step, **kw)

    monkeypatch.setattr(sft, "fit", fit_signalled)
    with pytest.raises(Interrupted, match="SIGTERM after step 2"):
        sft.train(cfg)
    monkeypatch.undo()
    sft.train(cfg, resume=True)
    assert same_final_weights(tmp_path / "a", tmp_path / "b")


# ------------------------------------------------------------------------- the preference loop
def _pref_config(tmp_path, **train):
    from postrl.config import PrefConfig, resolve

    return resolve(PrefConfig, {"output_dir": str(tmp_path), "model": TINY_MODEL,
                                "data": {"source": "task:arithmetic_pairs", "task_kwargs": {"level": 1}, "limit": 24},
                                "train": {"steps": 4, "batch_size": 8, "micro_batch_size": 8, "lr": 1e-3, **train},
                                "eval": {"limit": 4, "greedy": "never", "before": False},
                                "checkpoint": {"every": 10}, "logging": {"progress": False}}, [])


def test_pref_sigterm_saves_and_resume_matches_and_nan_losses_stop_it(tmp_path, monkeypatch):
    from postrl.trainers import pref

    pref.train(_pref_config(tmp_path / "a"))
    cfg = _pref_config(tmp_path / "b")
    real, calls = pref.train_step, []

    def signalled(p, idx):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(p, idx)

    monkeypatch.setattr(pref, "train_step", signalled)
    with pytest.raises(Interrupted, match="SIGTERM after step 3"):
        pref.train(cfg)
    assert [p.name for p in list_checkpoints(cfg.run_dir)] == ["step_000003"]
    monkeypatch.undo()
    pref.train(cfg, resume=True)
    assert same_final_weights(tmp_path / "a", tmp_path / "b")

    def nan_loss(p, idx):
        out = real(p, idx)
        next(p.model.parameters()).grad.fill_(math.nan)
        return out

    monkeypatch.setattr(pref, "train_step", nan_loss)
    nan_cfg = _pref_config(tmp_path / "c", max_nonfinite_steps=2)
    with pytest.warns(UserWarning, match="step 1: non-finite grad_norm nan"):
        with pytest.raises(NonFiniteStop, match=r"2 steps in a row \(to step 2\)"):
            pref.train(nan_cfg)
    assert [p.name for p in list_checkpoints(nan_cfg.run_dir)] == ["step_000002"]
