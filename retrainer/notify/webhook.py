"""The webhook notifier: the Telegram notifier's messages, as JSON POSTs to any URL.

`format = "json"`: one object per message (`event`, `text`, the run's id and host; the
finished message adds the exit code, the counts and the failures with their reasons).
`format = "slack"`: Slack's incoming-webhook payload, `{"text": …}` as plain text (also
understood by Mattermost, Rocket.Chat and others), split at line ends past 4000 characters.

The same messages and batching as Telegram (messages.py, batching.py), and the same
guarantees: sent from the notifier's own thread, each request bounded, 429 and 5xx
retried with backoff, `close()` bounded by close_timeout_s. The URL and any secret header
come from the environment or the secrets file (credentials.py); no log line holds either.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from retrainer.base.config import NotifySettings
from retrainer.notify.batching import FailureBatcher
from retrainer.notify.credentials import load_webhook_target
from retrainer.notify.http import HttpRequest, HttpSender
from retrainer.notify.messages import (
    finished_text,
    items_that_can_fail,
    severity,
    split_text,
    started_text,
)
from retrainer.notify.outbox import Failure, Finished, Job, Started, ThreadedNotifier

SLACK_TEXT_LIMIT = 4000
SUMMARY_COUNTS = ("total_symbols", "succeeded", "failed", "timed_out", "skipped", "interrupted")


class WebhookNotifier(ThreadedNotifier):
    def __init__(
        self, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> None:
        settings = NotifySettings.model_validate(dict(options))
        super().__init__("webhook", settings.close_timeout_s)
        self.settings = settings
        target = load_webhook_target(
            self.settings.url, self.settings.headers, self.settings.secrets_file, environ
        )
        self._url = target.url
        self._headers = {
            **target.headers,
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "retrainer",
        }
        self._sender = HttpSender(
            "webhook",
            self.settings.request_timeout_s,
            self.settings.max_retries,
            self.deadline,
        )
        self._batcher = FailureBatcher(self.settings.batch_window_s, self.settings.escalate_share)
        self._run: dict[str, Any] = {}
        self._start()

    # -- the notifier's thread -----------------------------------------------------------
    def handle(self, job: Job) -> None:
        if isinstance(job, Started):
            info = job.info
            self._run = {"run_id": info.get("run_id"), "host": info.get("host")}
            self._batcher.to_run = items_that_can_fail(info)
            self._post("run_started", started_text(info), {"info": _scalars(info)})
        elif isinstance(job, Failure):
            self._batcher.add(job.symbol, job.reason, job.at)
            text = self._batcher.take(time.monotonic())  # due at once when escalating
            if text is not None:
                self._post("failures", text, {})
        elif isinstance(job, Finished):
            self._batcher.discard()  # the finished message lists every failure
            summary = job.summary
            self._run = {
                "run_id": summary.get("run_id", self._run.get("run_id")),
                "host": summary.get("host", self._run.get("host")),
            }
            self._post("run_finished", finished_text(summary), _finished_fields(summary))

    def due_at(self) -> float | None:
        return self._batcher.due_at()

    def on_due(self) -> None:
        text = self._batcher.take(time.monotonic())
        if text is not None:
            self._post("failures", text, {})

    def finish(self) -> None:
        pending = self._batcher.take_all()
        if pending is not None:
            self._post("failures", pending, {})

    def counts(self) -> dict[str, int]:
        return {"sent": self._sender.sent, "failed": self._sender.failed}

    def _post(self, event: str, text: str, fields: Mapping[str, Any]) -> None:
        for label, payload in self._payloads(event, text, fields):
            body = json.dumps(payload, default=str, ensure_ascii=False).encode("utf-8")
            request = HttpRequest("POST", self._url, body, self._headers)
            if not self._sender.send(label, request):
                return  # the rest of a split message would make no sense alone

    def _payloads(
        self, event: str, text: str, fields: Mapping[str, Any]
    ) -> list[tuple[str, dict[str, Any]]]:
        if self.settings.format == "slack":
            # Escaped first, so that a part's length is what Slack counts; cut at line ends.
            parts = split_text(slack_escape(text), SLACK_TEXT_LIMIT)
            return [
                (
                    event if len(parts) == 1 else f"{event} {n}/{len(parts)}",
                    {"text": part, "mrkdwn": False},
                )
                for n, part in enumerate(parts, start=1)
            ]
        payload = {"source": "retrainer", "event": event, "text": text, **self._run, **fields}
        return [(event, payload)]


def slack_escape(text: str) -> str:
    """Slack's three control characters, escaped as its docs ask; nothing else."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _scalars(info: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if isinstance(v, str | int | float | bool) or v is None}


def _finished_fields(summary: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "day": summary.get("day"),
        "exit_code": summary.get("exit_code"),
        # ok; warning: failures within tolerated_failure_ratio (exit 0), or interrupted;
        # error: failures past it, or a night that did not start
        "severity": severity(summary),
        "counts": {k: summary[k] for k in SUMMARY_COUNTS if k in summary},
        "failures": dict(summary.get("failures") or {}),
    }
    if summary.get("tolerated_failures"):  # failures the ratio let the night pass with
        fields["tolerated_failures"] = summary["tolerated_failures"]
        fields["tolerated_failure_ratio"] = summary.get("tolerated_failure_ratio")
    if summary.get("quarantined"):  # skipped: failed too many nights in a row
        fields["quarantined"] = list(summary["quarantined"])
    if summary.get("promotions"):  # the gate's decisions, and why champions stayed
        fields["promotions"] = dict(summary["promotions"])
        fields["champions_kept"] = dict(summary.get("champions_kept") or {})
        fields["stale"] = list(summary.get("stale") or [])
    if summary.get("reason"):  # a night that stopped before it started says why
        fields["reason"] = summary["reason"]
    return fields
