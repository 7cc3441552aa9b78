"""The zygote: one preloaded process whose only job is to fork the attempts' processes.

multiprocessing's forkserver does this job for any target: for each process it opens a
socket connection, pickles the parent's sys.path, argv and main module, and the child
re-runs that main module and unpickles a Process object before the target starts: several
times the CPU of the fork itself (bench/fork_floor.py, docs/benchmarks.md). Here a fork is
one small message, and the child calls the worker at once.

The channels, all set up by Zygote.start() below:
  control socket (SOCK_SEQPACKET)  scheduler -> zygote: b"F" with one fd attached, the
                                   read end of the new process's inbox pipe;
                                   zygote -> scheduler: (pid, serial) of the fork, or
                                   (-errno, 0) when fork() failed.
  status pipe                      zygote -> scheduler: (serial, wait status) of each child
                                   the zygote reaped; serials, unlike pids, never repeat.
  lifeline                         its read end is held by the zygote and inherited by
                                   every child; the scheduler holds the write end.
The zygote exits when the control socket closes: the scheduler closed it, or died.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection

FORK_REQUEST = b"F"
REPLY = struct.Struct("=qq")  # pid (or -errno), serial
STATUS = struct.Struct("=qq")  # serial, wait status
ENTRY = "from retrainer.engine.drivers.zygote import serve; serve()"
# The exit code of a child whose status died with the zygote (multiprocessing's too).
LOST_STATUS = 255
CLOSE_WAIT_S = 5.0


# -- the scheduler's end -----------------------------------------------------------------
class ZygoteGone(EOFError):
    """The zygote exited: no attempt can be started any more."""


class Zygote:
    def __init__(self) -> None:
        self._control: socket.socket | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._statuses: Statuses | None = None
        self._lock = threading.Lock()  # one request and its reply at a time

    def start(
        self,
        preload: Sequence[str],
        env: Mapping[str, str],
        lifeline_fd: int,
        bars: Sequence[tuple[str, int, dict[str, object]]] = (),
    ) -> None:
        """Start it; its imports (torch's take seconds) overlap the caller's work. bars:
        data files (path, min_rows, format) it reads once for every attempt it forks."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        status_r, status_w = os.pipe()
        setup = {
            "parent": os.getpid(),
            "control": theirs.fileno(),
            "status": status_w,
            "lifeline": lifeline_fd,
            "sys_path": sys.path,
            "preload": list(preload),
            "bars": [list(b) for b in bars],
        }
        try:
            self._popen = subprocess.Popen(
                [sys.executable, "-c", ENTRY, json.dumps(setup)],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(), status_w, lifeline_fd),
                env={**os.environ, **env},
            )
        except BaseException:
            ours.close()
            os.close(status_r)
            raise
        finally:
            theirs.close()
            os.close(status_w)
        self._control = ours
        self._statuses = Statuses(status_r)

    def fork(self, inbox_fd: int) -> ZygoteChild:
        """A new process that runs worker.run_when_handed on this inbox (a pipe's read end,
        which the caller may close once this returns)."""
        if self._control is None or self._statuses is None:
            raise ZygoteGone("the zygote is not running")
        with self._lock:
            try:
                socket.send_fds(self._control, [FORK_REQUEST], [inbox_fd])
                reply = self._control.recv(REPLY.size)
            except OSError as exc:
                raise ZygoteGone(f"the process that forks attempts is gone ({exc})") from None
        if len(reply) != REPLY.size:
            raise ZygoteGone(f"the process that forks attempts is gone{self._exit_note()}")
        pid, serial = REPLY.unpack(reply)
        if pid < 0:
            raise OSError(-pid, f"fork failed: {os.strerror(-pid)}")
        return ZygoteChild(pid, serial, self._statuses)

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def close(self) -> None:
        """Closing the control socket ends the zygote; its children are not touched."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._popen is not None:
            try:
                self._popen.wait(CLOSE_WAIT_S)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
            self._popen = None
        if self._statuses is not None:
            self._statuses.close()
            self._statuses = None

    def _exit_note(self) -> str:
        code = self._popen.poll() if self._popen else None
        return "" if code is None else f" (exit status {code})"


class Statuses:
    """The exit codes the zygote reports, by serial; read by whichever thread asks."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._lock = threading.Lock()
        self._codes: dict[int, int] = {}
        self._pending = b""
        self.gone = False  # the zygote exited: no status will come any more
        self._closed = False

    def poll(self, serial: int) -> int | None:
        """The child's exit code (negative: killed by that signal) once it was reaped."""
        self._drain()
        return self._codes.get(serial)

    def forget(self, serial: int) -> None:
        with self._lock:
            self._codes.pop(serial, None)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = self.gone = True
                os.close(self.fd)

    def _drain(self) -> None:
        with self._lock:
            while not self.gone:
                try:
                    chunk = os.read(self.fd, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:  # the zygote is gone (the fd stays open: readable at EOF)
                    self.gone = True
                    break
                self._pending += chunk
            whole = len(self._pending) - len(self._pending) % STATUS.size
            for serial, status in STATUS.iter_unpack(self._pending[:whole]):
                self._codes[serial] = os.waitstatus_to_exitcode(status)
            self._pending = self._pending[whole:]


class ZygoteChild:
    """An attempt's process as the supervisor sees it: what it needs of a Process."""

    def __init__(self, pid: int, serial: int, statuses: Statuses) -> None:
        self.pid: int | None = pid
        self.serial = serial
        self._statuses = statuses
        self._code: int | None = None
        # Opened at once, while the pid is surely this child's (the zygote only forks on
        # our requests, and this one still waits for its inbox): the supervisor sees its
        # end through it, and so does this handle should the zygote die first.
        self.pidfd = _open_pidfd(pid)

    @property
    def sentinel(self) -> int:
        """Readable when an exit status has arrived (this child's or another's)."""
        return self._statuses.fd

    @property
    def exitcode(self) -> int | None:
        if self._code is None:
            self._code = self._statuses.poll(self.serial)
            if self._code is None and self._statuses.gone:
                self._code = self._status_without_zygote()
        return self._code

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.exitcode is None:
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0:
                return
            if self._statuses.gone:  # no status pipe to wait on: its own end, or a poll
                waitable = [self.pidfd] if self.pidfd is not None else []
                left = min(left, 0.05)
            else:
                waitable = [self._statuses.fd]
            with contextlib.suppress(OSError, ValueError):  # closed meanwhile: loop again
                select.select(waitable, [], [], left)

    def kill(self) -> None:
        if self.pid is not None and self._statuses.poll(self.serial) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        self._statuses.forget(self.serial)
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def _status_without_zygote(self) -> int | None:
        """The zygote died: its children were reparented, to the scheduler if it is a
        subreaper (which then reaps them here, with their real status), else to init."""
        assert self.pid is not None
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # not ours: its end is known, its status is not
            return LOST_STATUS if self._ended() else None
        return os.waitstatus_to_exitcode(status) if pid else None

    def _ended(self) -> bool:
        if self.pidfd is None:
            return True
        return bool(select.select([self.pidfd], [], [], 0)[0])


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):  # gone already, or no pidfds (Linux < 5.3)
        return None


# -- the zygote's end --------------------------------------------------------------------
def serve() -> None:
    """The zygote's main: preload, then fork on request and report each child's end."""
    setup = json.loads(sys.argv[1])
    # Until the control socket is watched (after the imports: seconds for torch), the
    # kernel kills us if the scheduler dies; a scheduler already gone means we exit now.
    _die_with_parent(signal.SIGKILL)
    if os.getppid() != setup["parent"]:
        os._exit(0)
    sys.path[:] = setup["sys_path"]
    # Ctrl-C reaches the whole foreground group: the scheduler decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from retrainer.engine.preload import preload

    preload(setup["preload"])
    if setup.get("bars"):
        from pathlib import Path

        from retrainer.engine.worker import preload_bars

        preload_bars([(Path(p), int(n), dict(f)) for p, n, f in setup["bars"]])
    # From here the control socket's end says the scheduler is gone. The death signal is
    # tied to the thread that started us (a Dask worker's may end), so it goes.
    _die_with_parent(0)
    control = socket.socket(fileno=setup["control"])
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake select through wake_w
    server = _Server(control, setup["status"], setup["lifeline"], (wake_r, wake_w))
    server.loop()


_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG): sig when the parent (its thread) exits; 0 clears it."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


class _Server:
    def __init__(
        self, control: socket.socket, status_fd: int, lifeline_fd: int, wake: tuple[int, int]
    ) -> None:
        self.control = control
        self.status_fd = status_fd
        self.lifeline_fd = lifeline_fd
        self.wake = wake
        self.serials: dict[int, int] = {}  # pid -> serial, of children not yet reaped
        self.next_serial = 1

    def loop(self) -> None:
        control = self.control.fileno()
        while True:
            readable, _, _ = select.select([control, self.wake[0]], [], [])
            if self.wake[0] in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake[0], 4096)
            self.reap()
            if control in readable and not self.serve_one():
                return

    def serve_one(self) -> bool:
        try:
            message, fds, _, _ = socket.recv_fds(self.control, 16, 1)
        except OSError:
            return False
        if not message:  # the scheduler closed its end, or died
            return False
        inbox_fd = fds[0]
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(inbox_fd)
            self.control.send(REPLY.pack(-(exc.errno or 1), 0))
            return True
        if pid == 0:
            self.become_attempt(inbox_fd)  # never returns
        os.close(inbox_fd)
        serial, self.next_serial = self.next_serial, self.next_serial + 1
        self.serials[pid] = serial
        self.control.send(REPLY.pack(pid, serial))
        return True

    def reap(self) -> None:
        while self.serials:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            serial = self.serials.pop(pid, None)
            if serial is not None:
                os.write(self.status_fd, STATUS.pack(serial, status))

    def become_attempt(self, inbox_fd: int) -> None:
        """In the child: drop the zygote's ends and signal handling, then run the attempt."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.control.close()
            for fd in (self.status_fd, *self.wake):
                os.close(fd)
            from retrainer.engine.worker import run_when_handed

            run_when_handed(
                Connection(inbox_fd, writable=False), Connection(self.lifeline_fd, writable=False)
            )
            code = 0
        except BaseException:  # the worker reports its own errors: this is a bug of ours
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
