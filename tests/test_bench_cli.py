"""`postrl bench` plumbing and the benchmarks' pure helpers (FLOP counting, rewards, configs).

No benchmark runs here: the commands are exercised on throw-away benchmark folders whose
modules only echo what they received.
"""

import json
import sys
import textwrap
from pathlib import Path

import pytest

from postrl.cli import find_benchmarks_root, list_benchmarks, main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `benchmarks` is a top-level folder of the checkout, not part of the package

from benchmarks import roofline  # noqa: E402
from benchmarks.common import SIZES, digit_fraction, markdown_table, median_after_warmup, rl_config, run_measured  # noqa: E402
from benchmarks.vs_trl import TRL_REWARDS, trl_arguments  # noqa: E402


# ------------------------------------------------------------------------------ CLI plumbing
def make_checkout(root: Path) -> Path:
    """A fake checkout: one runnable benchmark that records its argv and cwd, one failing, one helper."""
    bench = root / "benchmarks"
    bench.mkdir(parents=True)
    (bench / "__init__.py").write_text("")
    (bench / "echo.py").write_text(textwrap.dedent('''\
        """Echo: writes its arguments and working directory to echo.json."""
        import json, os, sys

        if __name__ == "__main__":
            with open("echo.json", "w") as f:
                json.dump({"argv": sys.argv[1:], "cwd": os.getcwd()}, f)
        '''))
    (bench / "fails.py").write_text('"""Exits with status 3."""\nimport sys\n\nif __name__ == "__main__":\n'
                                    '    sys.exit(3)\n')
    (bench / "helpers.py").write_text('"""Shared helpers, not a benchmark."""\n\ndef f():\n    return 1\n')
    (bench / "_private.py").write_text('"""Hidden."""\nif __name__ == "__main__":\n    pass\n')
    return root


def test_list_shows_runnable_modules_with_their_first_docstring_line(tmp_path, monkeypatch, capsys):
    make_checkout(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert "echo" in out and "Echo: writes its arguments and working directory to echo.json." in out
    assert "fails" in out and "Exits with status 3." in out
    assert "helpers" not in out and "_private" not in out  # no __main__ block / private


def test_bench_runs_the_module_from_the_repo_root_with_its_arguments(tmp_path, monkeypatch):
    root = make_checkout(tmp_path / "checkout")
    inner = root / "some" / "sub" / "dir"
    inner.mkdir(parents=True)
    monkeypatch.chdir(inner)  # found by walking up from here
    assert main(["bench", "echo", "--quick", "--sizes", "small,10m", "-x"]) == 0
    echoed = json.loads((root / "echo.json").read_text())
    assert echoed == {"argv": ["--quick", "--sizes", "small,10m", "-x"], "cwd": str(root)}


def test_bench_passes_on_the_benchmark_exit_status(tmp_path, monkeypatch):
    make_checkout(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["bench", "fails"])
    assert e.value.code == 3


@pytest.mark.parametrize("argv", [["bench", "nope"], ["bench"]])
def test_unknown_or_missing_name_exits_2_listing_valid_names(tmp_path, monkeypatch, capsys, argv):
    make_checkout(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "valid names: echo, fails" in err and "Traceback" not in err


def test_no_benchmarks_folder_is_a_clear_error(tmp_path):
    start = tmp_path / "a" / "b"
    start.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="source checkout"):
        find_benchmarks_root([start])


def test_the_checkout_lists_vs_trl_and_roofline():
    names = list_benchmarks(REPO / "benchmarks")
    assert names["vs_trl"].startswith("Side by side") and names["roofline"].startswith("Roofline")
    assert "common" not in names


# -------------------------------------------------------------------------------- FLOP counting
HAND = {"hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "intermediate_size": 16, "vocab_size": 10}


def test_matmul_params_by_hand():
    # head_dim 4: q 8x8=64, k 8x4=32, v 32, o 64, MLP 3x8x16=384 -> 576 per layer, x2 = 1152;
    # LM head 10x8 = 80; N = 1232
    assert roofline.matmul_params(HAND) == 1232


def test_model_flops_by_hand():
    # forward per token = 2N + 4 L q c = 2*1232 + 4*2*8*3 = 2464 + 192 = 2656; 5 tokens -> 13280
    assert roofline.model_flops(HAND, 5, context=3, training=False) == 13280
    assert roofline.model_flops(HAND, 5, context=3, training=True) == 3 * 13280  # 6N + 12 L q c
    assert roofline.model_flops(HAND, 5) == 6 * 1232 * 5  # no attention term without context


def test_matmul_params_equal_the_linear_weights_of_a_real_qwen2():
    import torch

    from postrl.learner.tiny import build_model, build_tokenizer

    model = build_model(build_tokenizer(), hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                        intermediate_size=48)
    linear = sum(m.weight.numel() for m in model.model.modules() if isinstance(m, torch.nn.Linear))
    # the tied LM head is the embedding matrix: counted once more as a matmul
    assert roofline.matmul_params(model.config) == linear + model.lm_head.weight.numel()


def test_roofline_row_by_hand():
    # rows 2 of 3 prompt + 2 completion tokens: S = 5, c = 3, training FLOPs = 10 tokens x 3 x 2656
    r = roofline.roofline_row(HAND, 1e6, rows=2, prompt_tokens=3, completion_tokens=2, learner_s=0.5,
                              rollout_s=0.25)
    assert r["learner_mfu"] == pytest.approx(10 * 3 * 2656 / 0.5 / 1e6)
    assert r["rollout_tok_s"] == pytest.approx(4 / 0.25)
    assert r["bound_tok_s"] == pytest.approx(1e6 / (2 * 1232))
    assert r["of_bound"] == pytest.approx(16 / (1e6 / 2464))


# ----------------------------------------------------------------------------- rewards, configs
def test_trl_scores_with_postrls_exact_match_under_trls_call():
    from postrl.rewards.builtin import exact_match

    assert TRL_REWARDS["exact_match"] is exact_match  # the same function, not a copy
    texts = ["46", " 46 ", "46.0", "4 6", "", "-4", "-4.00", "abc", "46\n", "nan", "1e1", "+46"]
    golds = ["46", "46", "46", "46", "0", "-4", "-4", "abc", "46", "nan", "10", "46"]
    expected = [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # "4 6" and "" are no numbers
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    # TRL's GRPOTrainer calls reward_func(prompts=, completions=, completion_ids=, **columns, trainer_state=)
    trl_call = dict(prompts=[None] * len(texts), completion_ids=[[0]] * len(texts), trainer_state=None)
    assert TRL_REWARDS["exact_match"](completions=completions, answer=golds, **trl_call) == expected
    assert TRL_REWARDS["exact_match"](completions=texts, answer=golds, **trl_call) == expected  # plain text


def test_digit_fraction_by_hand():
    msgs = [[{"role": "assistant", "content": t}] for t in ["12ab", "", "999", "a"]]
    assert digit_fraction(None, msgs) == [0.5, 0.0, 1.0, 0.0]
    assert digit_fraction(None, ["1x"]) == [0.5]


@pytest.mark.parametrize("name", sorted(SIZES))
def test_trl_arguments_match_the_postrl_config(name):
    size = SIZES[name]
    p = rl_config(size, "model_dir", 7)
    t = trl_arguments(size, 7, "out")
    assert t["max_steps"] == p["train"]["steps"] == 7
    assert t["per_device_train_batch_size"] == p["train"]["prompts_per_step"] * p["rollout"]["n"] == size.rows
    assert t["gradient_accumulation_steps"] == 1 and p["train"]["micro_batch_size"] == size.rows
    assert t["num_generations"] == p["rollout"]["n"]
    assert t["max_completion_length"] == p["rollout"]["max_new_tokens"]
    assert (t["temperature"], t["top_p"], t["top_k"]) == (p["rollout"]["temperature"], p["rollout"]["top_p"],
                                                           p["rollout"]["top_k"]) == (1.0, 1.0, 0)
    assert t["learning_rate"] == p["train"]["lr"] and t["lr_scheduler_type"] == p["train"]["schedule"]
    assert t["warmup_steps"] == p["train"]["warmup_steps"] == 0
    assert (t["adam_beta1"], t["adam_beta2"]) == tuple(p["train"]["betas"])
    assert t["adam_epsilon"] == p["train"]["eps"] and t["weight_decay"] == p["train"]["weight_decay"]
    assert t["max_grad_norm"] == p["train"]["max_grad_norm"]
    assert t["beta"] == p["algorithm"]["kl_coef"] == 0.0
    assert t["epsilon"] == p["algorithm"]["loss_kwargs"]["clip_low"] == p["algorithm"]["loss_kwargs"]["clip_high"]
    assert (t["loss_type"], p["algorithm"]["loss_agg"]) == ("dapo", "token_mean")
    assert t["num_iterations"] == p["train"]["epochs"] == p["train"]["mini_batches"] == 1
    assert t["bf16"] is False and p["train"]["bf16"] is False and t["gradient_checkpointing"] is False


def test_rl_config_is_a_valid_postrl_config():
    from postrl.config import RLConfig, resolve

    for size in SIZES.values():
        cfg = resolve(RLConfig, rl_config(size, "some/dir", 3), source="test")
        assert cfg.algorithm.advantage == "grpo" and cfg.algorithm.loss == "ppo_clip"  # from the preset
        assert cfg.algorithm.kl_coef == 0.0


# ---------------------------------------------------------------------------- measuring helpers
def test_run_measured_reports_each_childs_own_peak_rss(tmp_path):
    big = run_measured([sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"],
                       cwd=tmp_path, log=tmp_path / "big.log")
    held = bytearray(300 * 2**20)  # this process is now large: a child forked from it would inherit that
    held[::4096] = b"x" * len(held[::4096])
    small = run_measured([sys.executable, "-c", "pass"], cwd=tmp_path, log=tmp_path / "small.log")
    failed = run_measured([sys.executable, "-c", "import sys; print('boom'); sys.exit(4)"], cwd=tmp_path,
                          log=tmp_path / "failed.log")
    assert big.exit_code == 0 and big.max_rss_mb >= 300
    assert small.exit_code == 0 and small.max_rss_mb < 100  # neither the earlier child's nor ours
    assert failed.exit_code == 4 and "boom" in (tmp_path / "failed.log").read_text()


def test_median_after_warmup_drops_the_first_value():
    assert median_after_warmup([10.0, 1.0, 3.0, 2.0]) == 2.0
    assert median_after_warmup([5.0]) == 5.0  # too few: keep it


def test_markdown_table_formats_cells():
    text = markdown_table(["a", "b"], [[1.23456, None], ["x", 12345.6]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1.23 | - |", "| x | 12,346 |"]


# ------------------------------------------------------------------------- compare_samplers
def test_compare_samplers_reads_rollouts_gain_and_time_to_target(tmp_path):
    from benchmarks.compare_samplers import read_run, run_config

    # 3 steps: the second refills (24 groups of 8 generated) and retries 5 hinted completions
    steps = [{"step": 1, "zero_variance_groups": 0.5, "time/step": 2.0},
             {"step": 2, "zero_variance_groups": 0.25, "time/step": 3.0,
              "dynamic_sampling/generated_groups": 24, "hints/rescue_tries": 5},
             {"step": 3, "zero_variance_groups": 0.0, "time/step": 4.0}]
    evals = [{"step": 0, "accuracy": 0.40}, {"step": 2, "accuracy": 0.43}, {"step": 3, "accuracy": 0.45}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(s) for s in steps))
    (tmp_path / "eval.jsonl").write_text("\n".join(json.dumps(e) for e in evals))
    run = read_run("vade", 0, tmp_path, target_gain=0.03)
    assert run["rollouts"] == 128 + (24 * 8 + 5) + 128 == 453
    assert run["gain"] == pytest.approx(0.05) and run["per_point"] == pytest.approx(453 / 5)
    assert run["seconds_to_target"] == 5.0          # first eval >= 0.43 is at step 2: 2 s + 3 s of training
    assert run["zero_variance"] == pytest.approx(0.25)
    assert run["curve"] == [(0.0, 0.40), (325.0, 0.43), (453.0, 0.45)]
    assert read_run("vade", 0, tmp_path, target_gain=0.2)["seconds_to_target"] is None

    args = type("A", (), {"steps": 5, "lr": 1e-4, "per_level": 4, "eval_limit": 10, "eval_every": 5})()
    from postrl.config import RLConfig, resolve

    for name in ("vade", "scaf_grpo", "success_replay"):   # every benchmark run is a valid postrl config
        cfg = resolve(RLConfig, run_config(name, 0, "tiny", args, tmp_path / name))
        assert cfg.sampler.name == ("uniform" if name == "success_replay" else name)
    assert cfg.replay is not None


def test_length_control_runs_are_valid_postrl_configs(tmp_path):
    from benchmarks.length_control import RUNS, rl_config
    from postrl.config import RLConfig, resolve

    for run in RUNS:
        cfg = resolve(RLConfig, rl_config(run, 0, "tiny", tmp_path / run))
        assert (cfg.length.name if cfg.length else None) == {"hapo": "hapo", "length_schedule": "length_schedule",
                                                             "hbpo": "hbpo"}.get(run)
    hbpo = resolve(RLConfig, rl_config("hbpo", 0, "tiny", tmp_path / "h"))
    assert hbpo.rollout.budgets == [8, 24, 48] and hbpo.rollout.n == 12 and hbpo.train.prompts_per_step == 16


def test_soak_summary_reads_growth_drift_and_descriptors(tmp_path):
    from benchmarks.soak import last_step, summarize

    samples = [{"step": s, "rss_mb": 100.0 + (5.0 if s >= 50 else 0.0) + s / 100, "fds": 10 + (s > 500)}
               for s in range(0, 1001, 10)]
    steps = [{"step": i, "time/step": 0.2 if i <= 500 else 0.3} for i in range(1, 1001)]
    out = summarize(samples, steps)
    assert out["rss_warm_mb"] == pytest.approx(105.75)      # median over steps 50..100: 105.5 .. 106.0
    assert out["rss_growth_mb"] == pytest.approx(115.0 - 105.75)
    assert out["step_s_early"] == 0.2 and out["step_s_late"] == 0.3 and out["step_drift_pct"] == pytest.approx(50.0)
    assert (out["fds_first"], out["fds_last"], out["fds_max"]) == (10, 11, 11)
    metrics = tmp_path / "metrics.jsonl"
    assert last_step(metrics) == 0
    metrics.write_text('{"step": 1}\n{"step": 2}\n{"ste')    # the child is mid-write
    assert last_step(metrics) == 2
