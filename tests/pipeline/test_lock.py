"""One run per output folder: a second run refuses naming the holder; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from temflow.errors import FolderInUseError
from temflow.pipeline._lock import LOCK_NAME, output_lock

_HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from temflow.pipeline._lock import output_lock
    with output_lock(Path(sys.argv[1]), print):
        print("holding", flush=True)
        time.sleep(120)
    """
)


def _holder(folder):
    """A process that holds the folder's lock until killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "holding"
    return process


def _stop(process, sig):
    os.killpg(process.pid, sig)
    process.wait(timeout=30)
    process.stdout.close()


def test_a_second_holder_is_refused_naming_the_pid_and_host(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(FolderInUseError, match=f"pid {holder.pid} on host {socket.gethostname()}") as info:
            with output_lock(tmp_path, print):
                pass
        assert str(tmp_path) in str(info.value) and "[output] folder" in str(info.value)
    finally:
        _stop(holder, signal.SIGTERM)


def test_a_killed_holders_lock_is_taken_over_with_a_note(tmp_path):
    holder = _holder(tmp_path)
    _stop(holder, signal.SIGKILL)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid  # left behind
    notes: list[str] = []
    with output_lock(tmp_path, notes.append):
        held = json.loads((tmp_path / LOCK_NAME).read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    assert len(notes) == 1 and f"pid {holder.pid}" in notes[0] and "took over" in notes[0]
    # a run that ended normally leaves no holder behind: the next one takes no note
    notes.clear()
    with output_lock(tmp_path, notes.append):
        pass
    assert notes == []


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    with pytest.raises(KeyError), output_lock(tmp_path, print):
        raise KeyError("a stage failed")
    with output_lock(tmp_path, print):  # free again at once
        pass


def test_temflow_run_into_a_held_folder_refuses_in_one_line(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    run_file = tmp_path / "run.toml"
    run_file.write_text(
        f'[input.synthetic]\nframes = 4\nsize = 32\n[segmentation]\nmethod = "threshold"\n[output]\nfolder = "{folder}"\n'
    )
    holder = _holder(folder)
    try:
        t0 = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "temflow.cli", "run", str(run_file)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and f"pid {holder.pid}" in lines[0], result.stderr
        assert not (folder / "stages").exists()  # refused before any work
        assert time.monotonic() - t0 < 100
    finally:
        _stop(holder, signal.SIGTERM)


def test_without_file_locks_the_pid_decides(tmp_path, monkeypatch):
    import errno

    from temflow.pipeline import _lock

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(_lock.fcntl, "flock", no_locks)
    alive = {"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(alive))
    with pytest.raises(FolderInUseError, match=f"pid {os.getpid()}"), output_lock(tmp_path, print):
        pass
    elsewhere = dict(alive, host="another-machine")
    (tmp_path / LOCK_NAME).write_text(json.dumps(elsewhere))
    with pytest.raises(FolderInUseError, match="another-machine"), output_lock(tmp_path, print):
        pass
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_NAME).write_text(json.dumps(dict(alive, pid=int(dead.stdout))))
    notes: list[str] = []
    with output_lock(tmp_path, notes.append):
        pass
    assert len(notes) == 1 and "took over" in notes[0]
