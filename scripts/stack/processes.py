"""Background services of the embedded stack: start them with a pid file and a log, watch, stop."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.stack.settings import ROOT, Stack, StackError

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("nightshift.stack")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def service_pid(stack: Stack, name: str) -> int | None:
    """The pid of a running service of this stack, or None."""
    pidfile = stack.run_dir / f"{name}.pid"
    if not pidfile.exists():
        return None
    pid = int(pidfile.read_text().strip() or 0)
    return pid if pid and pid_alive(pid) else None


def start_service(stack: Stack, name: str, cmd: list[str], env: dict[str, str]) -> int:
    """Start ``cmd`` in its own session with its output in ``<log_dir>/<name>.log``, unless it runs."""
    pid = service_pid(stack, name)
    if pid:
        log.info("%s already running (pid %d)", name, pid)
        return pid
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    with open(stack.log_dir / f"{name}.log", "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            start_new_session=True,
        )
    (stack.run_dir / f"{name}.pid").write_text(str(proc.pid))
    log.info("started %s (pid %d), log %s", name, proc.pid, stack.log_dir / f"{name}.log")
    return proc.pid


def stop_service(stack: Stack, name: str, timeout: float = 20.0) -> None:
    """SIGTERM the service's process group, SIGKILL after ``timeout``; forget its pid file."""
    pid = service_pid(stack, name)
    if pid:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and pid_alive(pid):
                time.sleep(0.2)
            if not pid_alive(pid):
                break
        log.info("stopped %s", name)
    (stack.run_dir / f"{name}.pid").unlink(missing_ok=True)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_http(url: str, what: str, timeout: float, logfile: Path, alive: Callable[[], bool] | None = None) -> None:
    """Wait until ``url`` answers below 500; fail early when ``alive`` says the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status < 500:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if alive is not None and not alive():
            raise StackError(f"{what} exited while starting; see {logfile}")
        time.sleep(1)
    raise StackError(f"{what} did not answer at {url} within {timeout:.0f}s; see {logfile}")
