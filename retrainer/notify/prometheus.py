"""Prometheus metrics after every run: a textfile for node_exporter's textfile collector,
and/or a push to a Pushgateway (prometheus_client, `pip install 'retrainer[prometheus]'`).

    retrainer_last_run_exit_code                       the exit code of the last run
    retrainer_last_run_duration_seconds                its wall time
    retrainer_last_run_finished_timestamp_seconds      when it ended
    retrainer_last_run_items{state="…"}                its items by state (every state, 0s too)
    retrainer_last_success_timestamp_seconds           when a run last ended with exit 0
    retrainer_model_trained_timestamp_seconds{symbol}  when each symbol's latest model was made
    retrainer_model_age_seconds{symbol}                its age when the run ended
    retrainer_champion_age_seconds{symbol}             how long its champion has been in place
    retrainer_last_run_promotions{decision="…"}        the gate's decisions on its successes
    retrainer_last_run_stale_symbols, _fresh_symbols   data too old; skipped as unchanged

The success timestamp only moves when a run succeeds: a failed run keeps the previous
value (read back from the textfile; else the newest summary that says exit 0; else 0,
never). To the Pushgateway a success is PUT (the group replaced whole), anything else is
POSTed without the success timestamp, so that the Pushgateway keeps the previous one.
The textfile is written atomically (a dot-named temp file in the same folder, which the
collector ignores, then a rename) with the mode the umask gives; the push goes through
prometheus_client's push_to_gateway / pushadd_to_gateway with our HTTP sender as its
handler (bounded requests, retries, never past the close deadline), from the exporter's
own thread.
"""

from __future__ import annotations

import base64
import json
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import MANIFEST_NAME, Layout, atomic_write_bytes
from retrainer.base.config import PrometheusSettings
from retrainer.base.optional import import_optional
from retrainer.ledger.entries import ItemState
from retrainer.notify.credentials import (
    PUSHGATEWAY_PASSWORD_ENV,
    PUSHGATEWAY_USERNAME_ENV,
    load_secrets,
)
from retrainer.notify.http import HttpRequest, HttpSender
from retrainer.notify.outbox import Finished, Job, Started, ThreadedNotifier
from retrainer.notify.protocol import NOTIFY_FAILED, NOTIFY_SENT
from retrainer.registry.champion import ChampionError, read_champion

PREFIX = "retrainer_"
LAST_SUCCESS = "retrainer_last_success_timestamp_seconds"
MODEL_AGE = "retrainer_model_age_seconds"
# An attempt's folder: 20261123_020000Z, or 20261123_020000Z-1 for a second in one second.
ATTEMPT_FOLDER = re.compile(r"^(\d{8}_\d{6}Z)(?:-(\d+))?$")
SUMMARIES_READ = 400  # at most this many days back, for a success timestamp never exported


@dataclass(frozen=True)
class RunMetrics:
    exit_code: int
    finished_at: float
    duration_s: float | None
    items: Mapping[str, int]
    models: Mapping[str, float]  # symbol → when its latest model was made (epoch seconds)
    last_success: float  # 0: never
    promotions: Mapping[str, int] = field(default_factory=dict)  # the gate's decisions
    champions: Mapping[str, float] = field(default_factory=dict)  # symbol → promoted at
    stale: int = 0  # symbols whose data's last bar was too old
    fresh: int = 0  # symbols skipped: unchanged since their champion


def run_metrics(
    summary: Mapping[str, Any],
    root: Path,
    started_at: float | None,
    finished_at: float,
    previous: PreviousMetrics,
) -> RunMetrics:
    """The metrics of a run from its summary (engine_summary.json's content, or the small
    one of a night that stopped before it started) and the models under root."""
    raw_code = summary.get("exit_code")
    exit_code = raw_code if isinstance(raw_code, int) else 70
    finished = _epoch(summary.get("finished_at")) or finished_at
    by_symbol: Mapping[str, Mapping[str, Any]] = summary.get("by_symbol") or {}
    items = {state.value: 0 for state in ItemState}
    for entry in by_symbol.values():
        state = str(entry.get("status"))
        items[state] = items.get(state, 0) + 1
    # Tonight's symbols; a night that planned none keeps the symbols exported before.
    symbols = list(by_symbol) or sorted(previous.symbols)
    models = {s: t for s in symbols if (t := latest_model_time(root, s)) is not None}
    champions = {s: t for s in symbols if (t := champion_time(root, s)) is not None}
    if exit_code == 0:
        last_success = finished
    else:
        last_success = previous.last_success or last_success_from_summaries(root) or 0.0
    return RunMetrics(
        exit_code=exit_code,
        finished_at=finished,
        duration_s=_duration_s(summary, started_at, finished),
        items=items,
        models=models,
        last_success=last_success,
        promotions=dict(summary.get("promotions") or {}),
        champions=champions,
        stale=len(summary.get("stale") or ()),
        fresh=int(summary.get("fresh") or 0),
    )


def champion_time(root: Path, symbol: str) -> float | None:
    """When the symbol's champion was promoted (None: it has none, or an unreadable one)."""
    try:
        champion = read_champion(Layout(root), symbol)
    except ChampionError:
        return None
    return _epoch(champion.promoted_at) if champion else None


def _duration_s(summary: Mapping[str, Any], started_at: float | None, finished: float) -> float:
    minutes = summary.get("total_wall_minutes")
    if isinstance(minutes, int | float):
        return float(minutes) * 60.0
    start = _epoch(summary.get("started_at")) or started_at
    return max(0.0, finished - start) if start is not None else 0.0


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def latest_model_time(root: Path, symbol: str) -> float | None:
    """When the symbol's latest successful attempt started (its folder's stamp): the
    newest attempt folder that holds a manifest (written only for a success)."""
    try:
        folders = list((root / "models" / symbol).iterdir())
    except OSError:
        return None
    stamped = []
    for folder in folders:
        match = ATTEMPT_FOLDER.match(folder.name)
        if match:
            stamped.append((match.group(1), int(match.group(2) or 0), folder))
    for stamp, _, folder in sorted(stamped, reverse=True):
        if (folder / MANIFEST_NAME).is_file():
            made = datetime.strptime(stamp, "%Y%m%d_%H%M%SZ").replace(tzinfo=UTC)
            return made.timestamp()
    return None


def last_success_from_summaries(root: Path) -> float | None:
    """When the newest run recorded under summary/ that ended with exit 0 finished."""
    days = sorted((root / "summary").glob("*/engine_summary.json"), reverse=True)
    for path in days[:SUMMARIES_READ]:
        try:
            summary = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(summary, dict) and summary.get("exit_code") == 0:
            finished = _epoch(summary.get("finished_at"))
            if finished is not None:
                return finished
    return None


@dataclass(frozen=True)
class PreviousMetrics:
    """What the last textfile said: the success timestamp and the symbols it listed."""

    last_success: float | None = None
    symbols: frozenset[str] = field(default_factory=frozenset)


def read_previous(textfile: Path | None) -> PreviousMetrics:
    if textfile is None:
        return PreviousMetrics()
    try:
        text = textfile.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return PreviousMetrics()
    parser = import_optional("prometheus_client.parser", "prometheus")
    last_success, symbols = None, set()
    try:
        for family in parser.text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and sample.value > 0:
                    last_success = float(sample.value)
                elif sample.name == MODEL_AGE and "symbol" in sample.labels:
                    symbols.add(sample.labels["symbol"])
    except (ValueError, TypeError):  # a torn or hand-edited file: start afresh
        return PreviousMetrics()
    return PreviousMetrics(last_success, frozenset(symbols))


def build_registry(metrics: RunMetrics, with_success: bool) -> Any:
    """A CollectorRegistry holding the run's metrics (the success timestamp if asked)."""
    import_optional("prometheus_client", "prometheus")
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry(auto_describe=True)

    def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
        return Gauge(PREFIX + name, doc, list(labels), registry=registry)

    gauge("last_run_exit_code", "Exit code of the last retrainer run.").set(metrics.exit_code)
    gauge("last_run_finished_timestamp_seconds", "When the last run ended (Unix time).").set(
        metrics.finished_at
    )
    if metrics.duration_s is not None:
        gauge("last_run_duration_seconds", "Wall time of the last run.").set(metrics.duration_s)
    items = gauge("last_run_items", "Items of the last run by their final state.", ["state"])
    for state, count in sorted(metrics.items.items()):
        items.labels(state=state).set(count)
    if with_success:
        gauge(
            "last_success_timestamp_seconds",
            "When a run last ended with exit code 0 (Unix time; 0: never).",
        ).set(metrics.last_success)
    trained = gauge(
        "model_trained_timestamp_seconds",
        "When the symbol's latest successful model was trained (Unix time).",
        ["symbol"],
    )
    age = gauge(
        "model_age_seconds", "Age of the symbol's latest model when the run ended.", ["symbol"]
    )
    for symbol, made in sorted(metrics.models.items()):
        trained.labels(symbol=symbol).set(made)
        age.labels(symbol=symbol).set(max(0.0, metrics.finished_at - made))
    decisions = gauge(
        "last_run_promotions", "The gate's decisions on the last run's successes.", ["decision"]
    )
    for decision, count in sorted(metrics.promotions.items()):
        decisions.labels(decision=decision).set(count)
    gauge("last_run_stale_symbols", "Symbols whose last bar was too old.").set(metrics.stale)
    gauge("last_run_fresh_symbols", "Symbols skipped: unchanged since their champion.").set(
        metrics.fresh
    )
    champion_age = gauge(
        "champion_age_seconds", "How long the symbol's champion has been in place.", ["symbol"]
    )
    for symbol, promoted in sorted(metrics.champions.items()):
        champion_age.labels(symbol=symbol).set(max(0.0, metrics.finished_at - promoted))
    return registry


def render_textfile(registry: Any) -> bytes:
    from prometheus_client import generate_latest

    return bytes(generate_latest(registry))


class PrometheusExporter(ThreadedNotifier):
    def __init__(
        self,
        settings: PrometheusSettings,
        root: Path,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        import_optional("prometheus_client", "prometheus")  # missing: say so at once
        super().__init__("prometheus", settings.close_timeout_s)
        self.settings = settings
        self.root = root
        secrets = load_secrets(settings.secrets_file, environ)
        self._auth = _basic_auth(
            secrets.get(PUSHGATEWAY_USERNAME_ENV), secrets.get(PUSHGATEWAY_PASSWORD_ENV)
        )
        self._sender = HttpSender(
            "prometheus", settings.request_timeout_s, settings.max_retries, self.deadline
        )
        self._started_at: float | None = None
        self._written = 0
        self._start()

    def handle(self, job: Job) -> None:
        if isinstance(job, Started):
            self._started_at = job.at
        elif isinstance(job, Finished):
            self._export(job.summary, job.at)

    def counts(self) -> dict[str, int]:
        return {
            "written": self._written,
            "sent": self._sender.sent,
            "failed": self._sender.failed,
        }

    def _export(self, summary: Mapping[str, Any], at: float) -> None:
        textfile = self.settings.textfile
        previous = read_previous(textfile)
        metrics = run_metrics(summary, self.root, self._started_at, at, previous)
        if textfile is not None:
            self._write(textfile, build_registry(metrics, with_success=True))
        if self.settings.pushgateway_url:
            self._push(metrics)

    def _write(self, textfile: Path, registry: Any) -> None:
        try:
            atomic_write_bytes(textfile, render_textfile(registry))
        except OSError as exc:
            self.log.warning(
                NOTIFY_FAILED, what="textfile", path=str(textfile), reason=_os_reason(exc)
            )
        else:
            self._written += 1
            self.log.info(NOTIFY_SENT, what="textfile", path=str(textfile))

    def _push(self, metrics: RunMetrics) -> None:
        from prometheus_client import push_to_gateway, pushadd_to_gateway

        succeeded = metrics.exit_code == 0
        push = push_to_gateway if succeeded else pushadd_to_gateway
        push(
            str(self.settings.pushgateway_url),
            job=self.settings.job,
            registry=build_registry(metrics, with_success=succeeded),
            grouping_key={"instance": self.settings.instance or socket.gethostname()},
            timeout=self.settings.request_timeout_s,
            handler=self._handler("push" if succeeded else "pushadd"),
        )

    def _handler(self, what: str) -> Callable[..., Callable[[], None]]:
        """prometheus_client's push handler: the request goes through our sender."""

        def handler(
            url: str,
            method: str,
            timeout: float | None,
            headers: list[tuple[str, str]],
            data: bytes,
        ) -> Callable[[], None]:
            def send() -> None:
                all_headers = {**dict(headers), "User-Agent": "retrainer", **self._auth}
                self._sender.send(what, HttpRequest(method, url, data, all_headers))

            return send

        return handler


def _basic_auth(username: str | None, password: str | None) -> dict[str, str]:
    if not username:
        return {}
    token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
