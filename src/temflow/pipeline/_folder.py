"""The output folder: nothing in it may lead the pipeline's writes outside it.

A symbolic link planted inside the output folder (``figures -> /home/me``, or
``report.html -> ~/.bashrc``) would make the pipeline write through it. Every
entry is checked, without following links, before a run starts and before and
after every stage; during a stage, the files temflow writes refuse links
themselves (:mod:`temflow._nofollow`).
"""

from __future__ import annotations

import os
from pathlib import Path


def check_output_folder(folder: Path, *, source: str, stage: str | None = None) -> None:
    """Refuse an output folder holding a symbolic link that points outside it.

    Links whose target stays inside the folder are allowed; the folder itself may
    be a link (the user chose that path).

    Parameters
    ----------
    folder : pathlib.Path
        The output folder (it exists).
    source : str
        The run file, for the message.
    stage : str, optional
        The stage that just ran (the link appeared while it ran), for the message.

    Raises
    ------
    ValueError
        Naming the link and its target.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "out").mkdir()
    >>> (root / "out" / "figures").symlink_to(root)
    >>> check_output_folder(root / "out", source="run.toml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: run.toml: output.folder ... holds a symbolic link ... that points outside it ...
    """
    root = folder.resolve()
    for base, folders, files in os.walk(root, followlinks=False):
        for name in (*folders, *files):
            entry = Path(base) / name
            if not entry.is_symlink():
                continue
            target = entry.resolve()
            if target != root and root not in target.parents:
                during = (f"appeared while the {stage!r} stage ran (the run stops here; what that stage wrote may be "
                          "incomplete) and ") if stage else ""
                raise ValueError(
                    f"{source}: output.folder {str(folder)!r} holds a symbolic link {str(entry)!r} that {during}points "
                    f"outside it (to {str(target)!r}); temflow writes only inside its output folder: remove the link, "
                    "or choose another output.folder"
                )
