"""Checkpoint manifests: every file's size and SHA-256, written inside a checkpoint before it is
renamed into place, and checked before it is loaded.

`manifest.json` = {"format": 1, "files": {relative path: {"size": bytes, "sha256": hex}}}. A
checkpoint whose files differ from their manifest (truncated by a full disk, damaged by storage,
edited by hand) raises `CheckpointCorrupt` naming each file, the expected and the found size or
digest. A checkpoint without a manifest (written before manifests existed) still loads, unchecked.
Hashing reads every file once (SHA-256 runs at ~1.7 GB/s on one core here); a checkpoint verified
by this process is not hashed again while none of its files' sizes or mtimes changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
FORMAT = 1
_CHUNK = 1 << 20

# resolved checkpoint path -> the (file, size, mtime) signature it had when it verified
_verified: dict[str, tuple] = {}


class CheckpointCorrupt(ValueError):
    """A checkpoint's files do not match its manifest; `problems` has one line per damaged file."""

    def __init__(self, path: Path, problems: list[str]):
        self.path, self.problems = Path(path), problems
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        super().__init__(f"{path}: damaged checkpoint ({shown})")


def write_manifest(root: Path) -> dict[str, Any]:
    """Hash and fsync every file under `root`, then write and fsync the manifest and every directory."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path != root / MANIFEST_FILE:
            size, digest = _hash(path, fsync=True)
            files[path.relative_to(root).as_posix()] = {"size": size, "sha256": digest}
    manifest = {"format": FORMAT, "files": files}
    with open(root / MANIFEST_FILE, "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        fsync_dir(d)
    return manifest


def verify(root: str | Path) -> bool:
    """Check `root` against its manifest: True when it matches, False when there is no manifest
    (nothing to check); raises `CheckpointCorrupt` naming every damaged file."""
    root = Path(root)
    mpath = root / MANIFEST_FILE
    if not mpath.exists():
        return False
    signature = _signature(root)
    if _verified.get(str(root.resolve())) == signature:
        return True
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointCorrupt(root, [f"{MANIFEST_FILE}: unreadable ({e})"]) from None
    problems = []
    for rel, want in files.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing (expected {want['size']} bytes)")
            continue
        found = path.stat().st_size
        if found != want["size"]:
            problems.append(f"{rel}: expected {want['size']} bytes, found {found} (truncated or partly written)")
            continue
        _, digest = _hash(path)
        if digest != want["sha256"]:
            problems.append(f"{rel}: expected sha256 {want['sha256'][:16]}..., found {digest[:16]}... "
                            "(same size, different content)")
    if problems:
        raise CheckpointCorrupt(root, problems)
    _verified[str(root.resolve())] = signature
    return True


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _hash(path: Path, fsync: bool = False) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
        if fsync:  # the data just written reaches the disk before the rename makes it visible
            os.fsync(f.fileno())
    return size, h.hexdigest()


def _signature(root: Path) -> tuple:
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out.append((p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(out)
