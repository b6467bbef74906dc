"""A short pass of the loader fuzzer (benchmarks/fuzz_loader.py; the full pass runs 2,000 cases):
mutated files load whole or raise DataError, and the fuzzer does catch a loader that misbehaves."""

import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `benchmarks` is a folder of the checkout

from benchmarks import fuzz_loader  # noqa: E402


def test_a_hundred_mutated_files_load_or_raise_data_error():
    counts, findings = fuzz_loader.fuzz(100, seed=0, out=io.StringIO())
    assert findings == []
    assert counts["cases"] == 100
    # both outcomes are exercised by both loaders, so the pass means something
    assert min(counts["prompt: loaded"], counts["prompt: DataError"], counts["sft: loaded"],
               counts["sft: DataError"]) >= 10


def test_the_fuzzer_reports_a_crash_and_a_silent_drop(monkeypatch):
    import postrl.data.loading as loading

    real = loading.load_prompt_dataset

    def crashes_on_csv(cfg, *a, **kw):
        if cfg.source.endswith(".csv"):
            raise KeyError("prompt")
        data = real(cfg, *a, **kw)
        data.rows = data.rows[:-1] if len(data.rows) > 1 else data.rows  # loses a row without a word
        return data

    monkeypatch.setattr(loading, "load_prompt_dataset", crashes_on_csv)
    _, findings = fuzz_loader.fuzz(60, seed=0, out=io.StringIO())
    assert any("KeyError: 'prompt'" in f for f in findings)
    assert any("rows written" in f and "loaded" in f for f in findings)
