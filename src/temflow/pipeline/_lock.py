"""One run per output folder: a lock file holding the running process's pid and host.

Two runs writing into one folder would race on every store and table. The lock
is ``<folder>/.temflow.lock``: an advisory ``flock`` held for the whole run (the
operating system drops it when the process dies, however it dies) plus the
holder's pid, host and start time in the file, so that a refused run can say
who holds the folder. A lock file whose ``flock`` is free but which still names
a holder was left by a run that was killed: it is taken over, with a note.

The file is emptied, not deleted, when the run ends: deleting it would let a
run waiting on the old file and a new run on a new file both hold "the" lock.
Where ``flock`` is missing (Windows) or refused by the file system (some network
mounts), the pid alone decides: a holder alive on this host, or on another host
(whose processes cannot be checked), holds the folder.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from temflow.errors import FolderInUseError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["output_lock"]

LOCK_NAME = ".temflow.lock"


def _holder(handle: IO[str]) -> dict[str, Any]:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _refuse(folder: Path, holder: dict[str, Any]) -> FolderInUseError:
    since = holder.get("started", "an unknown time")
    return FolderInUseError(
        folder,
        f"another temflow run is writing into it (pid {holder.get('pid', '?')} on host "
        f"{holder.get('host', '?')}, since {since})",
        "wait for that run to finish, or set [output] folder to another folder; if that process is gone "
        f"(e.g. on another machine that crashed), delete {folder / LOCK_NAME}",
    )


@contextmanager
def output_lock(folder: Path, note: Callable[[str], None]) -> Iterator[None]:
    """Hold the lock of ``folder`` for the duration of the ``with`` block.

    Raises
    ------
    FolderInUseError
        If another live run holds the folder; names its pid and host.
    """
    path = folder / LOCK_NAME
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8")
    try:
        locked = False
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise _refuse(folder, _holder(handle)) from None
                # a file system without locks (some network mounts): the pid decides
        holder = _holder(handle)
        if holder:
            same_host = holder.get("host") == socket.gethostname()
            if not locked and (not same_host or _alive(holder.get("pid"))):
                raise _refuse(folder, holder)
            note(
                f"note: took over the lock of an earlier run that ended without releasing it "
                f"(pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {holder.get('started', '?')})"
            )
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(me))
        handle.flush()
        os.fsync(handle.fileno())
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
    finally:
        handle.close()  # closing drops the flock
