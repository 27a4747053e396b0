"""Run the ``geounet`` command in a subprocess: progress relayed, Cancel honoured.

No QGIS import here, so the runner and the command lines are tested without QGIS.

* Progress: geounet draws tqdm bars on stderr (``" 45%|####  | 9/20 [...]"``, redrawn after
  ``\\r``); every percentage is passed to ``on_progress`` and every finished line to ``on_line``.
* Cancel: ``is_canceled()`` is polled; on True the process gets SIGINT (geounet then removes its
  temporary files, leaves no partial output and exits 130); after ``grace`` seconds it is
  killed. Outputs are written atomically by geounet, so even a kill leaves no partial output
  under the output name.
* Errors: geounet reports bad input as one line ``geounet: error: ...`` with exit code 2; that
  line becomes the :class:`GeounetRunError` message.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["GeounetRunError", "default_executable", "run_geounet"]

_PERCENT = re.compile(r"(\d{1,3})%\|")
CONFIG_FILE = Path(__file__).with_name("config.json")


class GeounetRunError(RuntimeError):
    """The geounet command failed (message: its own one-line error) or was cancelled."""


def default_executable() -> str:
    """The geounet command: ``$GEOUNET_EXECUTABLE``, else ``config.json``, else on PATH.

    ``geounet qgis-install`` writes ``config.json`` beside this file.
    """
    if os.environ.get("GEOUNET_EXECUTABLE"):
        return os.environ["GEOUNET_EXECUTABLE"]
    try:
        configured = json.loads(CONFIG_FILE.read_text(encoding="utf-8")).get("executable")
    except (OSError, ValueError):
        configured = None
    return configured or shutil.which("geounet") or "geounet"


def choose_executable(stored: str | None) -> str:
    """The executable the plugin runs: the one set in QGIS's settings, if it still exists.

    A path stored by an earlier install whose environment is gone (or moved) falls back to
    :func:`default_executable`, so that ``geounet qgis-install`` from a new environment
    takes effect without editing the setting by hand.
    """
    if stored and (os.path.isfile(stored) or shutil.which(stored)):
        return stored
    return default_executable()


def _reader(stream, events: queue.Queue) -> None:
    """Split the command's output on ``\\r``/``\\n`` and queue ``(kind, value)`` events."""
    buffer = b""
    while chunk := stream.read1(4096):
        buffer += chunk
        *pieces, buffer = re.split(rb"[\r\n]", buffer)
        for raw in pieces:
            _piece(raw.decode("utf-8", "replace"), events)
    if buffer:
        _piece(buffer.decode("utf-8", "replace"), events)


def _piece(text: str, events: queue.Queue) -> None:
    text = text.strip()
    if not text:
        return
    match = _PERCENT.search(text)
    events.put(("progress", min(100, int(match.group(1)))) if match else ("line", text))


def _relay(events: queue.Queue, on_progress, on_line, tail: list[str]) -> None:
    """Hand queued events to the callbacks, in the caller's thread (QGIS feedback wants it)."""
    while True:
        try:
            kind, value = events.get_nowait()
        except queue.Empty:
            return
        if kind == "progress":
            on_progress(value)
        else:
            tail.append(value)
            del tail[:-20]
            on_line(value)


def _interrupt(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is not None:
        return
    if sys.platform == "win32":  # pragma: no cover - no SIGINT for a child on Windows
        proc.terminate()
    else:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_geounet(
    args: Sequence[str],
    *,
    executable: str | None = None,
    on_progress: Callable[[int], None] = lambda pct: None,
    on_line: Callable[[str], None] = lambda line: None,
    is_canceled: Callable[[], bool] = lambda: False,
    poll: float = 0.1,
    grace: float = 15.0,
) -> list[str]:
    """Run ``geounet ARGS...`` and wait for it.

    Args:
        args: The command's arguments (without the executable).
        executable: The geounet command (default: :func:`default_executable`).
        on_progress: Called with each percentage of a progress bar.
        on_line: Called with every other line the command prints.
        is_canceled: Polled every ``poll`` seconds; True interrupts the command.
        poll: Seconds between polls.
        grace: Seconds an interrupted command gets to clean up before it is killed.

    Returns:
        The last lines the command printed.

    Raises:
        GeounetRunError: The command could not start, failed, or was cancelled.
    """
    exe = executable or default_executable()
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    try:
        proc = subprocess.Popen(
            [exe, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
    except OSError as exc:
        raise GeounetRunError(
            f"cannot run the geounet command {exe!r} ({exc}); install geounet in a Python "
            "environment (pip install geounet) and set its path under Settings > Options > "
            "Processing > Providers > geounet, or run `geounet qgis-install` from it."
        ) from exc
    tail: list[str] = []
    events: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_reader, args=(proc.stdout, events), daemon=True)
    reader.start()
    canceled = False
    while proc.poll() is None:
        _relay(events, on_progress, on_line, tail)
        if is_canceled():
            canceled = True
            _interrupt(proc, grace)
            break
        time.sleep(poll)
    proc.wait()
    reader.join(5)
    _relay(events, on_progress, on_line, tail)
    if canceled:
        raise GeounetRunError("cancelled: geounet was interrupted and left no partial output.")
    if proc.returncode != 0:
        errors = [t for t in tail if t.startswith("geounet: error:")]
        message = errors[-1] if errors else (tail[-1] if tail else "no output")
        raise GeounetRunError(f"geounet exited with code {proc.returncode}: {message}")
    return tail
