"""A fault-injection trainer for tests: the behaviour is chosen per symbol.

    [trainer]
    plugin = "tests.support.plugins:faulty"
    [trainer.params]
    pid_dir = "/tmp/pids"
    behaviours = { HANG = "hang", BOOM = "raise" }

Every attempt writes its pid (and any grandchild's or daemon's) under pid_dir, so a test can check
with psutil that nothing survived.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrainer.training.contract import TrainContext


def _record_pid(ctx: TrainContext, pid: int, role: str) -> None:
    pid_dir = Path(str(ctx.params["pid_dir"]))
    pid_dir.mkdir(parents=True, exist_ok=True)
    # Atomic, so a test that kills everything at a random moment never reads half a pid.
    tmp = pid_dir / f".{ctx.symbol}-{role}-{pid}.tmp"
    tmp.write_text(str(pid))
    tmp.rename(pid_dir / f"{ctx.symbol}-{role}-{pid}.pid")


def _ok(ctx: TrainContext) -> Any:
    (ctx.out_dir / "model.bin").write_bytes(ctx.symbol.encode() * 100)
    return {"symbol": ctx.symbol, "value": 1.0}


def _hang(ctx: TrainContext) -> Any:
    while True:
        time.sleep(1)


def _hang_ignoring_term(ctx: TrainContext) -> Any:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return _hang(ctx)


def _grandchild(ctx: TrainContext) -> Any:
    # A grandchild in its own session that ignores SIGTERM: it escapes a plain killpg.
    code = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    _record_pid(ctx, child.pid, "grandchild")
    return _hang(ctx)


_DAEMON = """
import os, signal, sys, time
from pathlib import Path
if os.fork():
    os._exit(0)  # the first child exits: the grandchild is an orphan in its own session
os.setsid()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
tmp = Path(sys.argv[1] + ".tmp")
tmp.write_text(str(os.getpid()))
tmp.rename(sys.argv[1])
time.sleep(600)
"""


def _daemon(ctx: TrainContext) -> Path:
    """Double-fork a daemon that ignores SIGTERM, as a careless trainer's helper would."""
    pid_dir = Path(str(ctx.params["pid_dir"]))
    pid_dir.mkdir(parents=True, exist_ok=True)
    marker = pid_dir / f"{ctx.symbol}-daemon-{os.getpid()}.pid"
    subprocess.run([sys.executable, "-c", _DAEMON, str(marker)], check=True)
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return marker


def _daemon_then_crash(ctx: TrainContext) -> Any:
    _daemon(ctx)
    return _segfault(ctx)


def _daemon_then_ok(ctx: TrainContext) -> Any:
    _daemon(ctx)
    return _ok(ctx)


_HOG = "import sys, time; hog = [b'x' * 2**24 for _ in range(int(sys.argv[1]))]; time.sleep(600)"


def _alloc(ctx: TrainContext) -> Any:
    """Allocate and touch memory, 16 MB at a time, far past any test's cap."""
    hog = []
    for _ in range(512):  # 8 GB
        hog.append(b"x" * 2**24)
        time.sleep(0.005)
    return _ok(ctx)


def _alloc_in_child(ctx: TrainContext) -> Any:
    """The memory is in a subprocess: the cap is on the whole tree."""
    child = subprocess.Popen([sys.executable, "-c", _HOG, "512"])
    _record_pid(ctx, child.pid, "hog")
    child.wait()
    return _ok(ctx)


def _big_artifact(ctx: TrainContext) -> Any:
    (ctx.out_dir / "model.bin").write_bytes(b"w" * 4 * 2**20)
    return {"symbol": ctx.symbol, "value": 1.0}


def _raise(ctx: TrainContext) -> Any:
    raise ValueError(f"boom from {ctx.symbol}")


def _exit3(ctx: TrainContext) -> Any:
    os._exit(3)


def _segfault(ctx: TrainContext) -> Any:
    ctypes.string_at(0)


def _garbage(ctx: TrainContext) -> Any:
    return 42


def _fail_once(ctx: TrainContext) -> Any:
    marker = Path(str(ctx.params["pid_dir"])) / f"{ctx.symbol}.failed-once"
    if not marker.exists():
        marker.write_text("1")
        raise RuntimeError("first attempt fails")
    return _ok(ctx)


def _slow(ctx: TrainContext) -> Any:
    time.sleep(float(ctx.params.get("slow_s", 1.0)))
    return _ok(ctx)


def _partial_then_fail(ctx: TrainContext, corrupt: bool = False) -> Any:
    """First attempt: save a partial output, then fail; later attempts report its reuse."""
    reused = ctx.reuse_partial("features.parquet")
    if reused is None and ctx.reuse_dir is None:
        path = ctx.save_partial("features.parquet", b"expensive features")
        if corrupt:
            path.write_bytes(b"torn features")
        raise RuntimeError("failed after saving a partial output")
    return {"symbol": ctx.symbol, "reused": reused is not None}


def _threads(ctx: TrainContext) -> Any:
    """What runs inside the item's process: its OS threads and the BLAS pools' sizes."""
    from threadpoolctl import threadpool_info

    return {
        "os_threads": len(os.listdir("/proc/self/task")),
        "budget": ctx.threads,
        "blas_threads": max((p["num_threads"] for p in threadpool_info()), default=0),
    }


def _modules(ctx: TrainContext) -> Any:
    """Which of the scheduler's own modules the item's process holds."""
    return {name: name in sys.modules for name in ("retrainer.cli.app", "typer", "pydantic")}


def _device(ctx: TrainContext) -> Any:
    """Which device the engine gave the attempt, held for slow_s (so items overlap)."""
    time.sleep(float(ctx.params.get("slow_s", 1.0)))
    (ctx.out_dir / "model.bin").write_bytes(ctx.symbol.encode() * 100)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return {"device": ctx.device, "cuda_visible_devices": visible, "value": 1.0}


BEHAVIOURS: dict[str, Callable[[TrainContext], Any]] = {
    "partial_then_fail": _partial_then_fail,
    "corrupt_partial_then_fail": lambda ctx: _partial_then_fail(ctx, corrupt=True),
    "ok": _ok,
    "hang": _hang,
    "hang_ignoring_term": _hang_ignoring_term,
    "grandchild": _grandchild,
    "raise": _raise,
    "exit3": _exit3,
    "segfault": _segfault,
    "garbage": _garbage,
    "fail_once": _fail_once,
    "slow": _slow,
    "daemon_then_crash": _daemon_then_crash,
    "daemon_then_ok": _daemon_then_ok,
    "alloc": _alloc,
    "alloc_in_child": _alloc_in_child,
    "big_artifact": _big_artifact,
    "threads": _threads,
    "modules": _modules,
    "device": _device,
}


def faulty(ctx: TrainContext) -> Any:
    _record_pid(ctx, os.getpid(), "item")
    behaviour = dict(ctx.params.get("behaviours", {})).get(ctx.symbol, "ok")
    return BEHAVIOURS[behaviour](ctx)


def light(ctx: TrainContext) -> Any:
    """faulty, for a zygote that preloads nothing heavy (no torch): fast starts on nodes."""
    return faulty(ctx)


light.preload_modules = ()  # type: ignore[attr-defined]
