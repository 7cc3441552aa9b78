"""Standard streams that a closed reader cannot break.

`retrainer run --dry_run | head -1` closes the pipe after the first line. A closed stdout
is the reader saying it has seen enough: it is not a failure to write the run's files
(exit 74), and it must not stop a night that is training (`retrainer run | tee` killed by
Ctrl-C of the tee). So the command's standard streams go through `ClosedPipeTolerant`:
once a write meets a closed pipe, that stream's descriptor is pointed at /dev/null (what
is still buffered, and every later write, is dropped there without an error, at exit too)
and the command goes on to end with its own exit code.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, TextIO


class ClosedPipeTolerant:
    """A text stream that forwards to `stream`; a write or flush that meets a closed pipe
    points the stream's descriptor at /dev/null, so that this and every later write is
    dropped. No flag is kept: a process forked later that points the descriptor at a file
    of its own (an attempt's log) writes there as usual."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_left()
            return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_left()

    def _reader_left(self) -> None:
        # What the stream still buffers is flushed to /dev/null: no error at exit either.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno, buffer…
        return getattr(self._stream, name)


def tolerate_closed_pipes() -> None:
    """Wrap sys.stdout and sys.stderr (once) for the rest of the process."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, ClosedPipeTolerant):
            setattr(sys, name, ClosedPipeTolerant(stream))
