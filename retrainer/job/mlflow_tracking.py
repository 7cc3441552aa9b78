"""MLflow tracking (the `mlflow` extra): each attempt an MLflow run, each model a
registered version, the `champion` alias moved only by the gate.

An item listener placed after the promotion listener, whose decision it reads in the
ledger entry. Only the head writes to MLflow, from one thread of this listener's own, in
the order the items ended: mlflow is imported there (a second or so), a fresh SQLite store
is migrated there (seconds), and an unreachable server retries there (minutes), never in
the loop. Nothing it meets fails an item: an MLflow error is logged (`mlflow_failed`), and
the ledger stays the truth. A night is one parent run; each attempt's run is nested in it.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from retrainer.base.artifacts import Layout
from retrainer.base.config import MlflowSettings
from retrainer.engine.events import ItemListener
from retrainer.job.mlflow_runs import (
    MLFLOW_FAILED,
    MLFLOW_LOGGED,
    Failure,
    MlflowTracker,
    NightEnd,
    Success,
    Task,
    require_mlflow,
)
from retrainer.ledger.journal import Ledger


class MlflowListener(ItemListener):
    """Logs each success (and failure) to MLflow from a thread of its own; never blocks
    the loop, never fails an item. drain() waits at most close_timeout_s; close() ends the
    night's run and stops the thread."""

    def __init__(
        self, settings: MlflowSettings, layout: Layout, ledger: Ledger, run_id: str, trainer: str
    ) -> None:
        require_mlflow()  # a missing extra is bad input at open, not an error at night
        self._settings, self._layout, self._ledger = settings, layout, ledger
        self._run_id, self._trainer = run_id, trainer
        self._log = structlog.get_logger()
        self._cond = threading.Condition()
        self._tasks: deque[Task] = deque()
        self._busy: Task | None = None
        self._stopping = False
        self._abandoned = False  # drain timed out: what is left is reported, not written
        # The thread logs with the run's bound context (run_id), as the notifiers' do.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._serve,), name="retrainer-mlflow", daemon=True
        )
        self._thread.start()

    # -- the engine's hooks: enqueue and return -------------------------------------------
    def item_succeeded(self, item_id: str, out_dir: Path, files: Sequence[Path]) -> None:
        # Read now: the promotion listener has just recorded the gate's decision.
        self._put(Success(item_id, out_dir, self._ledger.get(item_id)))

    def item_failed(self, item_id: str, reason: str) -> None:
        self._put(Failure(item_id, reason, self._ledger.get(item_id)))

    def drain(self) -> None:
        """Wait for what is queued, at most close_timeout_s; then give up on the rest."""
        with self._cond:
            done = self._cond.wait_for(self._idle, self._settings.close_timeout_s)
            if done:
                return
            self._abandoned = True
            busy, left = self._busy, list(self._tasks)
            self._tasks.clear()
            self._cond.notify_all()
        waited = f"close_timeout_s={self._settings.close_timeout_s}"
        if busy is not None:
            self._failed(busy, f"still being written after {waited}; left to its thread")
        for task in left:
            self._failed(task, f"not written within {waited}")

    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        """End the night's run (with the summary's counts, when given) and stop the thread,
        waiting at most close_timeout_s; calling again does nothing."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            if not self._abandoned:
                self._tasks.append(NightEnd(summary))
            self._cond.notify_all()
        if not self._abandoned:
            self._thread.join(self._settings.close_timeout_s)
            if self._thread.is_alive():
                self._log.warning(MLFLOW_FAILED, what="close", reason="still busy; left behind")

    # -- the thread -------------------------------------------------------------------------
    def _put(self, task: Task) -> None:
        with self._cond:
            accepted = not (self._abandoned or self._stopping)
            if accepted:
                self._tasks.append(task)
                self._cond.notify_all()
        if not accepted:
            self._failed(task, "not written: the MLflow listener was closed")

    def _idle(self) -> bool:
        return not self._tasks and self._busy is None

    def _serve(self) -> None:
        tracker = self._connect()
        while (task := self._next()) is not None:
            try:
                if isinstance(tracker, str):  # no second try tonight: each costs minutes
                    self._failed(task, f"not written: MLflow unusable since the start ({tracker})")
                else:
                    self._handle(tracker, task)
            finally:
                with self._cond:
                    self._busy = None
                    self._cond.notify_all()

    def _connect(self) -> MlflowTracker | str:
        """Import mlflow, open the store (migrating a fresh one), find the experiment and
        start the night's run; else why not."""
        started = time.monotonic()
        try:
            tracker = MlflowTracker(self._settings, self._layout, self._run_id, self._trainer)
        except Exception as exc:  # the night goes on without MLflow
            reason = f"{type(exc).__name__}: {exc}"[:500]
            self._log.error(MLFLOW_FAILED, what="connect", reason=reason)
            return reason
        self._log.info(
            "mlflow_connected",
            tracking_uri=tracker.uri,
            experiment_id=tracker.experiment_id,
            seconds=round(time.monotonic() - started, 3),
        )
        return tracker

    def _next(self) -> Task | None:
        with self._cond:
            self._cond.wait_for(lambda: self._tasks or self._stopping or self._abandoned)
            if not self._tasks:
                return None
            self._busy = self._tasks.popleft()
            return self._busy

    def _handle(self, tracker: MlflowTracker, task: Task) -> None:
        try:
            if isinstance(task, Success):
                fields = tracker.log_success(task)
            elif isinstance(task, Failure):
                fields = tracker.log_failure(task)
            else:
                fields = tracker.end_night(task)
        except Exception as exc:  # an MLflow error never reaches the engine
            self._failed(task, f"{type(exc).__name__}: {exc}")
            return
        self._log.info(MLFLOW_LOGGED, what=_what(task), **_item(task), **fields)

    def _failed(self, task: Task, reason: str) -> None:
        self._log.error(MLFLOW_FAILED, what=_what(task), reason=reason[:2000], **_item(task))


def _what(task: Task) -> str:
    return {Success: "success", Failure: "failure", NightEnd: "night"}[type(task)]


def _item(task: Task) -> dict[str, str]:
    return {} if isinstance(task, NightEnd) else {"symbol": task.item_id}
