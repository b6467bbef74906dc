"""Checkpoints are verified on load (manifest of sizes + SHA-256) and a failed save (disk full)
leaves the previous checkpoint intact."""

import errno
import hashlib
import json
import shutil
from collections import namedtuple

import pytest
import torch

from postrl.learner.checkpoint import list_checkpoints, load_checkpoint, pick_checkpoint, save_checkpoint
from postrl.learner.checkpoint_manifest import MANIFEST_FILE, CheckpointCorrupt, verify
from postrl.learner.tiny import build_model, build_tokenizer
from postrl.run_stop import DiskFull


def _model(seed=0):
    tok = build_tokenizer()
    return tok, build_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                            intermediate_size=64, init_seed=seed)


def _save(tmp_path, step, model, tok, **kw):
    opt = kw.pop("optimizer", None) or torch.optim.AdamW(model.parameters(), lr=1e-3)
    return save_checkpoint(tmp_path, step, model=model, tokenizer=tok, optimizer=opt, **kw)


def test_manifest_lists_every_file_with_its_size_and_sha256(tmp_path):
    tok, model = _model()
    path = _save(tmp_path, 1, model, tok, state={"sampler": {"cursor": 3}})
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    assert manifest["format"] == 1 and sorted(manifest["files"]) == files
    for rel, entry in manifest["files"].items():
        data = (path / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert verify(path) is True


def test_extra_dirs_are_in_the_manifest(tmp_path):
    tok, model = _model()
    def critic(d):
        d.mkdir()
        (d / "v.bin").write_bytes(b"xyz")

    path = _save(tmp_path, 1, model, tok, extra_dirs={"critic": critic})
    assert json.loads((path / MANIFEST_FILE).read_text())["files"]["critic/v.bin"]["size"] == 3


def test_a_truncated_file_is_named_with_expected_and_found_size(tmp_path):
    tok, model = _model()
    path = _save(tmp_path, 1, model, tok)
    weights = path / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(CheckpointCorrupt, match=rf"model.safetensors: expected {size} bytes, found {size // 2}"):
        load_checkpoint(path, model=_model(1)[1])


def test_same_size_damage_and_a_missing_file_are_detected(tmp_path):
    tok, model = _model()
    path = _save(tmp_path, 1, model, tok)
    raw = bytearray((path / "optimizer.pt").read_bytes())
    raw[-20] ^= 0xFF  # one flipped byte: same size, different content
    (path / "optimizer.pt").write_bytes(bytes(raw))
    (path / "tokenizer.json").unlink()
    with pytest.raises(CheckpointCorrupt) as err:
        verify(path)
    problems = " | ".join(err.value.problems)
    assert "optimizer.pt: expected sha256" in problems and "same size" in problems
    assert "tokenizer.json: missing" in problems and len(err.value.problems) == 2


def test_a_damaged_file_after_a_successful_verify_is_still_caught(tmp_path):
    # the per-process cache of verified checkpoints keys on sizes and mtimes
    tok, model = _model()
    path = _save(tmp_path, 1, model, tok)
    assert verify(path)
    (path / "trainer_state.json").write_text('{"step": 9}')
    with pytest.raises(CheckpointCorrupt, match="trainer_state.json"):
        verify(path)


def test_an_old_checkpoint_without_a_manifest_loads_with_a_warning(tmp_path):
    tok, model = _model()
    path = _save(tmp_path, 2, model, tok, state={"a": 1})
    (path / MANIFEST_FILE).unlink()
    other = _model(1)[1]
    with pytest.warns(UserWarning, match="no manifest.json"):
        state = load_checkpoint(path, model=other)
    assert state == {"step": 2, "a": 1}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_pick_checkpoint_falls_back_past_damaged_newer_ones(tmp_path):
    tok, model = _model()
    for step in (1, 2, 3):
        _save(tmp_path, step, model, tok, keep_last=3)
    s2, s3 = list_checkpoints(tmp_path)[1:]
    (s3 / "model.safetensors").write_bytes(b"")
    (s2 / MANIFEST_FILE).write_text("{not json")
    path, rejected = pick_checkpoint(tmp_path)
    assert path.name == "step_000001"
    assert [e.path.name for e in rejected] == ["step_000003", "step_000002"]
    assert "expected" in rejected[0].problems[0] and "unreadable" in rejected[1].problems[0]


def _fail_in_torch_save(monkeypatch, exc):
    real = torch.save

    def partial_then_fail(obj, f, *a, **k):
        with open(f, "wb") as out:
            out.write(b"\0" * 1000)  # some bytes got written before the disk filled up
        raise exc

    monkeypatch.setattr(torch, "save", partial_then_fail)
    return real


Usage = namedtuple("Usage", "total used free")


def test_disk_full_mid_save_keeps_the_previous_checkpoint_and_names_dir_and_space(tmp_path, monkeypatch):
    tok, model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.tensor([[5, 6]])).logits.sum().backward()
    opt.step()
    prev = _save(tmp_path, 4, model, tok, optimizer=opt, state={"x": 1})
    need = sum(f.stat().st_size for f in prev.rglob("*") if f.is_file())
    _fail_in_torch_save(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10 << 20, 10 << 20, 1 << 14))  # 16 KB free
    with pytest.raises(DiskFull) as err:
        _save(tmp_path, 5, model, tok, optimizer=opt)
    msg = str(err.value)
    root = tmp_path / "checkpoints"
    assert f"in {root}" in msg and "step_000005" in msg and "0.0 MB free" in msg
    assert f"needs about {need / 2**20:.1f} MB (the size of step_000004)" in msg
    assert need > 1 << 14 and f"Free at least {(need - (1 << 14)) / 2**20:.1f} MB" in msg
    assert "step_000004 is intact" in msg
    assert err.value.exit_code == 3
    monkeypatch.undo()
    assert sorted(p.name for p in root.iterdir()) == ["step_000004"]  # the temporary copy is gone
    other = _model(1)[1]
    assert load_checkpoint(prev, model=other) == {"step": 4, "x": 1}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_disk_full_before_any_checkpoint_estimates_from_the_model_size(tmp_path, monkeypatch):
    tok, model = _model()
    # torch.save reports ENOSPC as this RuntimeError; a nearly empty disk makes it a disk-full stop
    _fail_in_torch_save(monkeypatch, RuntimeError("[enforce fail at inline_container.cc] file write failed"))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10 << 20, 10 << 20, 1000))
    with pytest.raises(DiskFull, match="estimated from the model size with AdamW's two moments") as err:
        _save(tmp_path, 1, model, tok)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert f"needs about {3 * weights / 2**20:.1f} MB" in str(err.value)
    assert "there is no earlier checkpoint" in str(err.value)
    monkeypatch.undo()
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_other_save_errors_propagate_unchanged_and_clean_up(tmp_path, monkeypatch):
    tok, model = _model()
    _fail_in_torch_save(monkeypatch, RuntimeError("pickling failed"))  # plenty of space: not a disk-full stop
    with pytest.raises(RuntimeError, match="pickling failed") as err:
        _save(tmp_path, 1, model, tok)
    assert not isinstance(err.value, DiskFull)
    monkeypatch.undo()
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_resaving_a_step_replaces_it_and_leaves_no_hidden_directories(tmp_path):
    tok, model = _model()
    _save(tmp_path, 1, model, tok, state={"v": 1})
    (tmp_path / "checkpoints" / ".tmp_step_000007").mkdir()  # left by a run killed mid-save
    (tmp_path / "checkpoints" / ".trash_step_000000").mkdir()  # killed mid-delete
    _, model2 = _model(1)
    path = _save(tmp_path, 1, model2, tok, state={"v": 2})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000001"]
    assert load_checkpoint(path, model=_model(3)[1])["v"] == 2
