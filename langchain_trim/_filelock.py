"""An exclusive, non-blocking lock on a path, released when its process ends (even kill -9).

Used where two processes must not write the same files at once: an eval output folder
(a second ``trim eval`` would delete the first one's in-flight temporary files) and the
assembly of an embedded model file (a second assembler would race on the partial file).

On POSIX the lock is ``fcntl.flock`` on a small lock file holding the owner's pid; the
kernel drops it when the process dies, so a killed run never leaves a stale lock.  The
file is removed on release; an acquirer that locked a file which was meanwhile removed
(and maybe recreated) retries on the current one.  Elsewhere an ``O_EXCL`` lock file
holding the pid is used, and a file whose pid is no longer alive is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class LockHeld(Exception):
    """The lock is held by another process (``pid`` when known)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"{path} is held by {who}")
        self.path = path
        self.pid = pid


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def _acquire_flock(path: Path) -> int:
    assert fcntl is not None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeld(path, _read_pid(path)) from None
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed the file after we opened it
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd


def _acquire_exclusive(path: Path) -> int:  # pragma: no cover - non-POSIX fallback
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pid = _read_pid(path)
            if pid is not None and not _pid_alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            raise LockHeld(path, pid) from None
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd
    raise LockHeld(path, _read_pid(path))


@contextlib.contextmanager
def exclusive_lock(path: str | Path, *, wait: float = 0.0) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` for the block.

    If another process holds it, retry for up to ``wait`` seconds, then raise
    :class:`LockHeld` (``wait=0``: at once).
    """
    path = Path(path)
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = _acquire_flock(path) if fcntl is not None else _acquire_exclusive(path)
            break
        except LockHeld:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


__all__ = ["LockHeld", "exclusive_lock"]
