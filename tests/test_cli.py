"""The `postrl` command: fast help, algorithm listing, clear errors, eval and plot."""

import json
import subprocess
import sys

import pytest

from postrl.cli import main


def test_help_does_not_import_torch():
    code = "import sys, postrl.cli; postrl.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_algos_json_lists_every_registry_with_papers(capsys):
    assert main(["algos", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = {kind: [e["name"] for e in items] for kind, items in data.items()}
    assert {"grpo", "dr_grpo", "rloo", "reinforce_pp"} <= set(names["advantage estimators"])
    assert {"ppo_clip", "reinforce"} <= set(names["policy losses"])
    assert {"grpo", "dr_grpo", "rloo", "reinforce_pp"} <= set(names["presets"])
    assert {"exact_match", "math_verify", "format", "length_penalty"} <= set(names["rewards"])
    assert "uniform" in names["samplers"]
    assert all(e["paper"] and e["summary"] for items in data.values() for e in items)


def test_bad_config_exits_2_with_the_key_named(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("algorithm:\n  advantage: grpoo\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "algorithm.advantage" in err and "grpoo" in err and "Traceback" not in err


def test_bad_data_row_exits_2_naming_file_row_and_column(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": "", "answer": "3"}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  source: {data}\n  eval_source: {data}\n")
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "d.jsonl" in err and "row 2" in err and "prompt" in err


@pytest.mark.slow
def test_eval_and_plot_on_a_trained_run(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name_or_path: tiny\n  tiny: {hidden_size: 32, num_layers: 1, num_heads: 2, "
                   "num_kv_heads: 1, intermediate_size: 64}\n"
                   "data:\n  source: task:arithmetic\n  task_kwargs: {level: 1}\n"
                   "rollout: {n: 2, max_new_tokens: 3}\n"
                   "train: {steps: 1, prompts_per_step: 2}\n"
                   "eval: {limit: 4, before: false}\nlogging: {progress: false}\n")
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--set", "train.lr=1e-3"]) == 0
    ckpt = next((run / "checkpoints").iterdir())
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(ckpt), "--data", "task:arithmetic", "--set", "data.task_kwargs={level: 1}",
                 "--limit", "5", "--k", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["problems"] == 5 and 0 <= result["accuracy"] <= result["pass@2"] + 1e-9 <= 1 + 1e-9
    assert main(["plot", str(run)]) == 0
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
