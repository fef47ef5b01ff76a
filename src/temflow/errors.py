"""temflow's own exceptions.

Every error that comes from user input is a ``ValueError`` (bad value) or a
``TypeError`` (bad type); a file that cannot be read or written raises
:class:`MovieFileError`, whatever the library underneath raised, so a caller
needs to catch one type and always learns the path and the format.
"""

from __future__ import annotations

import errno
import os

__all__ = ["MovieFileError", "IncompleteStoreError", "DiskFullError", "FolderInUseError", "is_disk_full"]


class MovieFileError(ValueError):
    """A movie file or store that temflow cannot read (or write).

    Parameters
    ----------
    path : str or os.PathLike
        The file, folder or store concerned.
    format : str
        The format temflow was reading it as (``"dm4"``, ``"ser"``, ``"zarr"``...).
    problem : str
        What is wrong, in words a microscopist understands.
    fix : str, optional
        What to do about it.

    Examples
    --------
    >>> err = MovieFileError("run1.dm4", "dm4", "the file is empty (0 bytes)")
    >>> str(err)
    "cannot read 'run1.dm4' as dm4: the file is empty (0 bytes)"
    >>> isinstance(err, ValueError)
    True
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        format: str,
        problem: str,
        fix: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.format = format
        self.problem = problem
        self.fix = fix
        message = f"cannot read {self.path!r} as {format}: {problem}"
        if fix:
            message += f"; {fix}"
        super().__init__(message)

    def __reduce__(self):  # keep the fields when the error crosses a process boundary
        return (type(self), (self.path, self.format, self.problem, self.fix))


class IncompleteStoreError(MovieFileError):
    """A zarr store whose writing never finished (interrupted or still running)."""


class DiskFullError(OSError):
    """No space left on the device (or in the user's quota) while writing ``path``.

    An ``OSError`` with ``errno.ENOSPC``, so code that handles the standard
    error still does; its message is one line naming the path and what to do.

    Parameters
    ----------
    path : str or os.PathLike
        The file, store or folder being written.
    fix : str, optional
        What to do about it (free space, then resume).

    Examples
    --------
    >>> err = DiskFullError("out/masks.zarr", "free space, then run again")
    >>> str(err)
    "no space left on the device while writing 'out/masks.zarr'; free space, then run again"
    >>> err.errno == errno.ENOSPC
    True
    """

    def __init__(self, path: str | os.PathLike[str], fix: str | None = None) -> None:
        self.path = os.fspath(path)
        self.fix = fix
        message = f"no space left on the device while writing {self.path!r}"
        if fix:
            message += f"; {fix}"
        super().__init__(errno.ENOSPC, message, self.path)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # keep the fields when the error crosses a process boundary
        return (type(self), (self.path, self.fix))


class FolderInUseError(ValueError):
    """An output folder that another temflow run is writing into.

    Parameters
    ----------
    folder : str or os.PathLike
        The output folder.
    problem : str
        Who holds it (pid, host, since when).
    fix : str
        What to do about it.

    Examples
    --------
    >>> str(FolderInUseError("results", "pid 12 on host a holds it", "wait"))
    "output folder 'results' is in use: pid 12 on host a holds it; wait"
    """

    def __init__(self, folder: str | os.PathLike[str], problem: str, fix: str) -> None:
        self.folder = os.fspath(folder)
        self.problem = problem
        self.fix = fix
        super().__init__(f"output folder {self.folder!r} is in use: {problem}; {fix}")

    def __reduce__(self):  # keep the fields when the error crosses a process boundary
        return (type(self), (self.folder, self.problem, self.fix))


def is_disk_full(exc: BaseException) -> bool:
    """True if ``exc`` says the device (or the user's quota) has no space left.

    Examples
    --------
    >>> import errno
    >>> is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    True
    >>> is_disk_full(OSError(errno.EACCES, "Permission denied"))
    False
    """
    if isinstance(exc, DiskFullError):
        return True
    if not isinstance(exc, OSError):
        return False
    # pyarrow and some fsspec backends raise OSError without an errno; their message names it
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or "no space left on device" in str(exc).lower()
