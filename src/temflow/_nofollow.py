"""Files written without following symbolic links: a link planted in the output folder cannot redirect them.

The pipeline checks its output folder for links before and after every stage, but a link
planted *during* a stage (``figures -> /home/me``, ``report.html -> ~/.bashrc``) would
lead that stage's writes outside the folder. :func:`write_file` walks from the folder
down to the file's directory one component at a time (``openat`` with ``O_NOFOLLOW``,
so no component can be a link, and a link planted after the walk does not change the
directory already opened), writes a hidden temporary file there (``O_NOFOLLOW |
O_EXCL``) and renames it into place inside that directory (a rename replaces a link
at the name, it never writes through it). :func:`confined_to` says which folder is
the root for the writes of a ``with`` block (the pipeline's output folder); outside
one, the file's own directory is the root (its final name is still never followed).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["LinkInOutputError", "at_calls", "check_directory", "confined_to", "confined_root", "write_file", "open_directory"]

_ROOT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("temflow_write_root", default=None)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
# openat and renameat (POSIX); elsewhere (Windows) each folder is checked by path instead, which a
# link planted between the check and the write can still beat
_AT = {os.open, os.mkdir, os.unlink, os.replace} <= os.supports_dir_fd and bool(_NOFOLLOW)


class LinkInOutputError(ValueError):
    """A symbolic link inside the output folder where temflow was about to write.

    Parameters
    ----------
    link : str or os.PathLike
        The link.
    root : str or os.PathLike
        The output folder.

    Examples
    --------
    >>> str(LinkInOutputError("out/figures", "out")).split(";")[0]
    "'out/figures' is a symbolic link inside the output folder 'out'"
    """

    def __init__(self, link: str | os.PathLike[str], root: str | os.PathLike[str]) -> None:
        self.link, self.root = os.fspath(link), os.fspath(root)
        try:
            target = f" (to {os.readlink(self.link)!r})"
        except OSError:
            target = ""
        super().__init__(
            f"{self.link!r} is a symbolic link inside the output folder {self.root!r}{target}; temflow does not "
            "write through links (it could lead outside the folder): remove the link and run again"
        )

    def __reduce__(self):  # keep the fields when the error crosses a process boundary
        return (type(self), (self.link, self.root))


@contextmanager
def confined_to(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Make ``root`` the folder no write of :func:`write_file` may leave, for a ``with`` block.

    Parameters
    ----------
    root : str or path
        The output folder (it may itself be a link: the user chose that path).

    Yields
    ------
    pathlib.Path
        ``root``, absolute.
    """
    absolute = Path(os.path.abspath(root))
    token = _ROOT.set(absolute)
    try:
        yield absolute
    finally:
        _ROOT.reset(token)


def confined_root() -> Path | None:
    """The folder set by the innermost :func:`confined_to` block, or None."""
    return _ROOT.get()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def open_directory(folder: str | os.PathLike[str], *, create: bool = True) -> int:
    """Open ``folder`` for ``*at`` calls, refusing any link below the confining root.

    Inside a :func:`confined_to` block, every component of ``folder`` below the
    root is opened with ``O_NOFOLLOW`` (and created if missing when ``create``);
    elsewhere ``folder`` is opened as it is. The caller closes the descriptor.

    Raises
    ------
    LinkInOutputError
        If a component below the root is a symbolic link.
    """
    target = Path(os.path.abspath(folder))
    root = _ROOT.get()
    if root is None or not _inside(target, root):
        if create:
            target.mkdir(parents=True, exist_ok=True)
        return os.open(target, os.O_RDONLY | _DIRECTORY)
    if create:
        root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | _DIRECTORY)
    here = root
    try:
        for part in target.relative_to(root).parts:
            here = here / part
            if create:
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if os.path.islink(here):
                    raise LinkInOutputError(here, root) from None
                raise exc
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def at_calls() -> bool:
    """True where folders are opened without following links (``openat``) and renames happen inside them."""
    return _AT


def check_directory(folder: str | os.PathLike[str]) -> None:
    """Create ``folder`` if needed, refusing a link among its components below the confining root.

    Raises
    ------
    LinkInOutputError
        If a component below the root is a symbolic link.
    """
    if _AT:
        os.close(open_directory(folder))
    else:
        _check_by_path(Path(os.path.abspath(folder)))


def _check_by_path(folder: Path) -> None:
    """Without ``openat``: refuse a link among ``folder``'s components below the root, by path."""
    root = _ROOT.get()
    if root is None or not _inside(folder, root):
        folder.mkdir(parents=True, exist_ok=True)
        return
    here = root
    for part in folder.relative_to(root).parts:
        here = here / part
        if here.is_symlink():
            raise LinkInOutputError(here, root)
        here.mkdir(exist_ok=True)


def _write_by_path(out: Path, write: Callable[[BinaryIO], object]) -> None:
    _check_by_path(out.parent)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as file:
            write(file)
        os.replace(tmp, out)  # replaces a link at the name, never writes through it
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_file(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` atomically, never through a symbolic link.

    ``write(file)`` fills a hidden temporary file in the (verified) directory,
    which is then renamed to ``path`` within that directory.

    Parameters
    ----------
    path : str or path
        The file to write.
    write : callable
        Called with a binary file object open for writing.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    LinkInOutputError
        If a folder between the confining root and ``path`` is a symbolic link.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "elsewhere").mkdir()
    >>> (folder / "out").mkdir()
    >>> (folder / "out" / "figures").symlink_to(folder / "elsewhere")
    >>> with confined_to(folder / "out"):
    ...     write_file(folder / "out" / "figures" / "a.txt", lambda f: f.write(b"x"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    temflow._nofollow.LinkInOutputError: '.../out/figures' is a symbolic link inside the output folder ...
    >>> list((folder / "elsewhere").iterdir())
    []
    """
    out = Path(os.path.abspath(path))
    if not _AT:
        _write_by_path(out, write)
        return Path(path)
    fd = open_directory(out.parent)
    tmp = f".{out.name}.{os.getpid()}.tmp"
    try:
        try:
            os.unlink(tmp, dir_fd=fd)  # left by a process killed while writing
        except FileNotFoundError:
            pass
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666, dir_fd=fd)
        try:
            with os.fdopen(handle, "wb") as file:
                write(file)
            # a link planted at the name itself is replaced, never written through
            os.replace(tmp, out.name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=fd)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)
    return Path(path)
