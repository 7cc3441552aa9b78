"""A loopback TCP proxy that can cut connections: real network faults for real clients.

`cut_uploads_after(n)`: from now on, every connection that sends more than n bytes to the
server is dropped (both ends closed) after those n bytes: an upload dying halfway. A
client that retries meets the same fault again, until `heal()`.
"""

from __future__ import annotations

import socket
import threading


class CuttingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # so that stop() is noticed promptly
        self._cut_after: int | None = None
        self._cut_once = False
        self.bytes_up = 0  # bytes sent towards the server, all connections together
        self._closing = False
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CuttingProxy:
        self._thread.start()
        return self

    def cut_uploads_after(self, n_bytes: int, once: bool = False) -> None:
        """Drop connections that send more than n_bytes; with once, only the next one."""
        self._cut_after = n_bytes
        self._cut_once = once

    def heal(self) -> None:
        self._cut_after = None

    def stop(self) -> None:
        self._closing = True
        self._listener.close()
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        sent = 0
        try:
            while chunk := source.recv(65536):
                limit = self._cut_after if upstream else None
                if limit is not None and sent + len(chunk) > limit:
                    sink.sendall(chunk[: max(0, limit - sent)])
                    if self._cut_once:
                        self.heal()
                    break
                sink.sendall(chunk)
                sent += len(chunk)
                if upstream:
                    with self._lock:
                        self.bytes_up += len(chunk)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)
            with self._lock:
                self._sockets -= {source, sink}


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
