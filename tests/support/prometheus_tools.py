"""Debian's real Prometheus Pushgateway and node_exporter, each on a free loopback port.

    with Pushgateway.started() as gateway:        # prometheus-pushgateway
        gateway.url                                # the [prometheus] pushgateway_url
        gateway.samples()                          # what it serves on /metrics, parsed
    with NodeExporter.started(folder) as node:    # prometheus-node-exporter, textfile only
        node.samples()

`make test-tools` installs both (apt); a test that needs one skips when it is missing.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

PUSHGATEWAY = "prometheus-pushgateway"
NODE_EXPORTER = "prometheus-node-exporter"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(url: str) -> list[Sample]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


@dataclass
class _Exporter:
    url: str
    process: subprocess.Popen[bytes]

    def samples(self, prefix: str = "retrainer_") -> list[Sample]:
        return [s for s in scrape(self.url) if s.name.startswith(prefix)]

    @classmethod
    @contextlib.contextmanager
    def _run(cls, binary: str, args: list[str]) -> Iterator[_Exporter]:
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(binary)
        port = free_port()
        log = tempfile.TemporaryFile()  # its own log, read only if it does not start
        process = subprocess.Popen(
            [path, f"--web.listen-address=127.0.0.1:{port}", *args],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        exporter = cls(f"http://127.0.0.1:{port}", process)
        try:
            end = time.monotonic() + 30
            while True:
                try:
                    scrape(exporter.url)
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > end:
                        log.seek(0)
                        err = log.read().decode("utf-8", "replace")
                        raise RuntimeError(f"{binary} did not start: {err}") from None
                    time.sleep(0.1)
            yield exporter
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


class Pushgateway(_Exporter):
    @classmethod
    def started(cls) -> contextlib.AbstractContextManager[_Exporter]:
        return cls._run(PUSHGATEWAY, ["--persistence.file="])


class NodeExporter(_Exporter):
    @classmethod
    def started(cls, textfile_dir: Path) -> contextlib.AbstractContextManager[_Exporter]:
        return cls._run(
            NODE_EXPORTER,
            [
                "--collector.disable-defaults",
                "--collector.textfile",
                f"--collector.textfile.directory={textfile_dir}",
            ],
        )


def installed(binary: str) -> bool:
    return shutil.which(binary) is not None
