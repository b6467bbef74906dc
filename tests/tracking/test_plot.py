"""plot_run writes a PNG from a run directory and explains what is wrong when it cannot."""

import json

import pytest

from postrl.tracking import MetricsLogger, plot_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir, steps=5):
    with MetricsLogger(run_dir) as log:
        for s in range(1, steps + 1):
            log.log(s, {"reward/mean": s / steps, "accuracy": s / (2 * steps), "kl": 0.01 * s,
                        "entropy": float("nan") if s == 3 else 1.0, "loss": 1.0 / s})
    (run_dir / "eval.jsonl").write_text("".join(json.dumps({"step": s, "accuracy": 0.1 * s}) + "\n"
                                                for s in (0, steps)))


def test_plot_writes_a_png_with_default_keys(tmp_path):
    write_run(tmp_path)
    out = plot_run(tmp_path)
    assert out == tmp_path / "curves.png"
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000


def test_plot_custom_keys_and_output(tmp_path):
    write_run(tmp_path)
    out = plot_run(tmp_path, out=tmp_path / "sub" / "loss.png", keys=["loss", "eval:accuracy"])
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_plot_unknown_key_lists_available(tmp_path):
    write_run(tmp_path)
    with pytest.raises(ValueError, match=r"nope.*available: .*eval:accuracy.*reward/mean"):
        plot_run(tmp_path, keys=["nope"])


def test_plot_empty_directory_errors_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics in .*metrics.jsonl; is this a postrl run"):
        plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match="no metrics in"):
        plot_run(tmp_path)
