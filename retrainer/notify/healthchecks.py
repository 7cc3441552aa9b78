"""Dead man's switch pings, healthchecks.io style: the monitor raises the alarm when a
night fails, and also when no night reports at all.

    run started   POST <ping_url>/start
    run ended     POST <ping_url>       when it exited 0
                  POST <ping_url>/fail  otherwise, a night that stopped before it started too

Every ping carries `rid` (one uuid per run) so that the monitor pairs start and end and
shows the run's duration; the end's body is the exit code and the last lines of the
finished message (healthchecks keeps the body, shown beside the ping). Sent from the
pinger's own thread like every notifier: bounded requests, retries on 5xx/429/network
errors, a bounded wait at close. The ping URL is a capability (whoever has it can ping):
from [healthchecks] ping_url, RETRAINER_HEALTHCHECKS_PING_URL or the secrets file; a log
line names its host only.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

from retrainer.base.config import HealthchecksSettings
from retrainer.base.errors import BadInputError
from retrainer.notify.credentials import PING_URL_ENV, load_secrets
from retrainer.notify.http import HttpRequest, HttpSender
from retrainer.notify.messages import finished_text, started_text
from retrainer.notify.outbox import Finished, Job, Started, ThreadedNotifier

# healthchecks.io keeps 100 kB of a ping's body, a self-hosted instance 10 kB by default.
BODY_BYTES = 10_000


def ping_url(
    settings: HealthchecksSettings, environ: Mapping[str, str] | None = None
) -> str | None:
    """The configured ping URL (the environment or the secrets file win), or None."""
    url = load_secrets(settings.secrets_file, environ).get(PING_URL_ENV) or settings.ping_url
    if url and not url.startswith(("http://", "https://")):
        raise BadInputError(f"healthchecks: {PING_URL_ENV} is not an http(s) URL")
    return url or None


def signal_url(url: str, signal: str, rid: str) -> str:
    """<url>/<signal>?rid=…, keeping any query the ping URL has (e.g. ?create=1)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.rstrip("/") + (f"/{signal}" if signal else "")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + [("rid", rid)]
    return urllib.parse.urlunsplit(parts._replace(path=path, query=urllib.parse.urlencode(query)))


def end_body(summary: Mapping[str, Any], lines: int) -> str:
    """The exit code (and why, for a night that stopped before it started), then the
    finished message's last lines, within what the monitor keeps."""
    head = [f"exit code {summary.get('exit_code')}"]
    if summary.get("reason"):
        head.append(f"reason: {summary['reason']}")
    tail = finished_text(summary).splitlines()[-lines:]
    while tail and len("\n".join(head + tail).encode("utf-8")) > BODY_BYTES:
        tail.pop(0)
    return "\n".join(head + tail)[:BODY_BYTES]


class HealthchecksPinger(ThreadedNotifier):
    def __init__(self, settings: HealthchecksSettings, url: str, rid: str | None = None) -> None:
        super().__init__("healthchecks", settings.close_timeout_s)
        self.settings = settings
        self._url = url
        self.rid = rid or str(uuid.uuid4())
        self._sender = HttpSender(
            "healthchecks", settings.request_timeout_s, settings.max_retries, self.deadline
        )
        self._start()

    def handle(self, job: Job) -> None:
        if isinstance(job, Started):
            self._ping("start", "start", started_text(job.info))
        elif isinstance(job, Finished):
            ok = job.summary.get("exit_code") == 0
            body = end_body(job.summary, self.settings.body_lines)
            self._ping("success" if ok else "fail", "" if ok else "fail", body)

    def counts(self) -> dict[str, int]:
        return {"sent": self._sender.sent, "failed": self._sender.failed}

    def _ping(self, what: str, signal: str, body: str) -> None:
        request = HttpRequest(
            "POST",
            signal_url(self._url, signal, self.rid),
            body.encode("utf-8"),
            {"Content-Type": "text/plain; charset=utf-8", "User-Agent": "retrainer"},
        )
        self._sender.send(f"ping {what}", request)
