"""Atomic file writes: a kill at any moment leaves the old file or the new one, never a torn one.

Every writer in composer (npz, PNG, JSON, safetensors, shards) goes through ``atomic_write``:
the data is written to a fresh, unpredictable temporary file in the target's folder (created with
``O_EXCL`` by ``tempfile.mkstemp``, so a planted symlink is never followed), flushed and fsynced,
given the usual permissions, then ``os.replace``-d over the target. On any exception, Ctrl-C
included, the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TEMP_PREFIX = ".composer-tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside ``folder`` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends without error.

    Args:
        path: the final file name. Its folder must exist.
        mode: ``"wb"`` (bytes) or ``"w"`` (text, UTF-8).

    Yields:
        The open temporary file.
    """
    path = Path(path)
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', not {mode!r}")
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files that a killed writer left in ``folder``; returns what was removed."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.glob(TEMP_PREFIX + "*"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed
