"""temflow's own exceptions.

Every error that comes from user input is a ``ValueError`` (bad value) or a
``TypeError`` (bad type); a file that cannot be read or written raises
:class:`MovieFileError`, whatever the library underneath raised, so a caller
needs to catch one type and always learns the path and the format.
"""

from __future__ import annotations

import os

__all__ = ["MovieFileError", "IncompleteStoreError"]


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
