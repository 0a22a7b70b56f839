"""Atomic file writes: a reader sees the old file or the complete new one, never a part of either.

Every results, cache and checkpoint file is written through these helpers. The data goes to a
temporary file in the target's folder, named ``.<name>.<random>.tmp<suffix>`` (hidden, and with the
target's suffix so that writers which infer the format from the name, such as ``np.save`` or
``savefig``, behave as with the target). The file is fsynced, renamed over the target with
``os.replace``, and the folder is fsynced. The new file gets the mode a plain ``open()`` would give
it (``0o666`` less the process umask, or the folder's default ACL). On any error, ``KeyboardInterrupt``
included, the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

PathLike = str | os.PathLike[str]

#: Marks a temporary file's name, before the target's suffix.
TEMP_MARK = ".tmp"
#: Glob matching the temporary files these helpers create (and that a killed process leaves behind).
TEMP_GLOB = f".*{TEMP_MARK}*"

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _create_temp(path: Path) -> Path:
    """Create an empty temporary file next to ``path``; the kernel applies the umask, as for ``open()``."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_MARK}{path.suffix}")
        try:
            os.close(os.open(tmp, _CREATE_FLAGS, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"cannot create a temporary file next to {path}")


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; once the block succeeds, it replaces ``path``.

    For writers that need a file name (``np.save``, ``torch.save``, ``Figure.savefig``): the
    temporary path ends with ``path``'s suffix. If the block raises, the temporary file is removed
    and ``path`` is untouched.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its folder must exist.

    Yields
    ------
    Path
        An existing empty file in the same folder, to be overwritten by the block.
    """
    target = Path(path)
    tmp = _create_temp(target)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # not every file system (or OS) fsyncs folders
        _fsync(target.parent, directory=True)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its folder must exist.
    data : bytes
        The complete new content.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text`` atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its folder must exist.
    text : str
        The complete new content, written as is (no newline translation).
    encoding : str, default "utf-8"
        Text encoding.
    """
    atomic_write_bytes(path, text.encode(encoding))
