"""fedetf.io: atomic writes keep the old file or the whole new one, follow the umask and leave no temp file."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedetf import io as fio


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask after the test changes it."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_each_way(folder: Path) -> list[Path]:
    paths = [folder / "a.txt", folder / "b.bin", folder / "c.npy"]
    fio.atomic_write_text(paths[0], "text")
    fio.atomic_write_bytes(paths[1], b"bytes")
    with fio.atomic_path(paths[2]) as tmp:
        np.save(tmp, np.arange(3))
    return paths


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_mode_follows_the_umask(mask: int, mode: int, tmp_path: Path, umask: None) -> None:
    (tmp_path / "a.txt").write_text("old")
    (tmp_path / "a.txt").chmod(0o640)  # a replaced file takes the umask's mode, not its predecessor's
    os.umask(mask)
    for path in _write_each_way(tmp_path):
        assert _mode(path) == mode, path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.npy"]


def test_replaced_content_is_complete(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    old, new = os.urandom(1 << 16), os.urandom(5 << 20)
    path.write_bytes(old)
    with open(path, "rb") as reader:  # opened before the replace: keeps reading the old file whole
        fio.atomic_write_bytes(path, new)
        assert reader.read() == old
    assert path.read_bytes() == new
    fio.atomic_write_text(path, "ünïcode\nlines\r\n")
    assert path.read_bytes() == "ünïcode\nlines\r\n".encode()  # utf-8, no newline translation
    arr = np.arange(100_000, dtype=np.int64).reshape(100, 1000)
    with fio.atomic_path(tmp_path / "arr.npy") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npy" and tmp.name.startswith(".arr.npy.")
        np.save(tmp, arr)  # the suffix is kept, so np.save does not append ".npy"
    np.testing.assert_array_equal(np.load(tmp_path / "arr.npy"), arr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arr.npy", "data.bin"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_error_while_writing_keeps_the_original(error: type[BaseException], tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text("original")
    with pytest.raises(error), fio.atomic_path(path) as tmp:
        tmp.write_text("half of the new con")
        raise error("interrupted")
    assert path.read_text() == "original"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_failed_sync_or_replace_keeps_the_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("original")

    def fail(*args: object) -> None:
        raise OSError("disk full")

    for name in ("fsync", "replace"):
        with monkeypatch.context() as mp:
            mp.setattr(os, name, fail)
            with pytest.raises(OSError, match="disk full"):
                fio.atomic_write_text(path, "new")
        assert path.read_text() == "original"
        assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_a_new_file_is_only_created_on_success(tmp_path: Path) -> None:
    path = tmp_path / "new.txt"
    with pytest.raises(ValueError), fio.atomic_path(path):
        raise ValueError
    assert not path.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        fio.atomic_write_text(tmp_path / "missing-folder" / "x.txt", "x")


def test_temp_glob_matches_leftovers_only(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), fio.atomic_path(tmp_path / "x.npy") as tmp:
        leftover = tmp  # what a killed process (SIGKILL: no cleanup) would leave
        raise KeyboardInterrupt
    leftover.write_bytes(b"")
    (tmp_path / "x.npy").write_bytes(b"")
    assert list(tmp_path.glob(fio.TEMP_GLOB)) == [leftover]
