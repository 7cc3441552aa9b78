"""The texts a notifier sends: run started, failure alerts, run finished; and splitting.

Pure functions of plain mappings (the run record, engine_summary.json's content), so any
backend can reuse them and tests can read them without a server. Plain text, no markup:
a symbol or a reason can hold any character, and nothing has to be escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# Telegram's limit for one message, in UTF-16 code units (an emoji counts two).
MESSAGE_LIMIT = 4096
SHARPE_KEY = "net_sharpe"
SLOWEST_SHOWN = 3
# A failure list longer than this is cut, with a count of the rest: the summary JSON has all.
FAILURES_SHOWN = 50
REASON_CHARS = 300
STALE_SHOWN = 10
QUARANTINED_SHOWN = 10
# A finished night's severity (engine_summary.json, the webhook's `severity`) and its icon.
SEVERITY_ICONS = {"ok": "✅", "warning": "⚠️", "error": "❌"}


def items_that_can_fail(info: Mapping[str, Any]) -> int:
    """The failure share's denominator: the items to train and those failed on bad data
    before any attempt (without a plan's counts, every symbol)."""
    if info.get("to_run") is None:
        return int(info.get("symbols") or 0)
    return int(info.get("to_run") or 0) + int(info.get("bad_data") or 0)


def started_text(info: Mapping[str, Any]) -> str:
    """Run started: mode, driver, symbol count, concurrency."""
    symbols = info.get("symbols", "?")
    to_run, to_skip = info.get("to_run"), info.get("to_skip")
    counts = f"{symbols} symbols"
    if to_run is not None and to_skip is not None:
        bad = int(info.get("bad_data") or 0)
        counts += f" ({to_run} to train, {to_skip} to skip" + (
            f", {bad} failed on bad data)" if bad else ")"
        )
    lines = [
        f"▶️ retrainer: run started on {info.get('host', '?')}",
        f"run {info.get('run_id', '?')}",
        f"mode {info.get('mode', '?')} · driver {info.get('driver', '?')} · {counts}",
        f"concurrency {info.get('window', '?')} · {info.get('threads_per_item', '?')} "
        "threads per item",
    ]
    if info.get("concurrency_why"):  # the plan's reason, e.g. "memory allows 5, … → 5"
        lines.append(f"({info['concurrency_why']})")
    # The plan's forecast (retrainer.plan.forecast) and, when it misses it, the deadline.
    if info.get("forecast"):
        deadline = f" · deadline {info['deadline']} local" if info.get("deadline") else ""
        lines.append(f"{info['forecast']}{deadline}")
    if info.get("deadline_warning"):
        lines.append(f"⏰ {info['deadline_warning']}")
    return "\n".join(lines)


def failures_text(
    failures: Sequence[tuple[str, str]], failed_total: int, to_run: int, escalated: bool
) -> str:
    """One alert for a window's failures; escalated when a large share of symbols failed."""
    if escalated:
        share = f" ({failed_total / to_run:.0%})" if to_run else ""
        head = (
            f"🚨 retrainer: SYSTEMIC FAILURE? {failed_total} of {to_run} symbols to train "
            f"have failed{share}"
        )
    else:
        noun = "symbol" if len(failures) == 1 else "symbols"
        head = f"❌ retrainer: {len(failures)} {noun} failed ({failed_total} so far this run)"
    return "\n".join([head, *_failure_lines(failures)])


def not_started_text(summary: Mapping[str, Any]) -> str:
    """A run that stopped before its night started (`"started": false`): exit code, why."""
    return "\n".join(
        [
            f"❌ retrainer: run did not start on {summary.get('host', '?')} "
            f"(exit {summary.get('exit_code')})",
            f"run {summary.get('run_id', '?')} · stopped at: {summary.get('stage', '?')}",
            _short(str(summary.get("reason") or "no reason recorded")),
        ]
    )


def severity(summary: Mapping[str, Any]) -> str:
    """ok: exit 0, nothing failed; warning: exit 0 with failures within the tolerated
    failure ratio, or interrupted (130); error: any other end (failures past the ratio,
    a night that did not start)."""
    exit_code = summary.get("exit_code")
    if summary.get("started") is False:
        return "error"
    if exit_code == 0:
        return "warning" if _tolerated(summary) else "ok"
    return "warning" if exit_code == 130 else "error"


def _tolerated(summary: Mapping[str, Any]) -> bool:
    """Exit 0 with failures: the tolerated failure ratio let them through."""
    return bool(summary.get("tolerated_failures") or summary.get("failures"))


def tolerance_line(summary: Mapping[str, Any]) -> str | None:
    """With a tolerated failure ratio and failures: within it (exit 0) or past it."""
    ratio = summary.get("tolerated_failure_ratio")
    failed = int(summary.get("failed") or 0)
    if not isinstance(ratio, int | float) or ratio <= 0 or not failed:
        return None
    tried = failed + int(summary.get("succeeded") or 0)
    share = f"{failed} of {tried} tried ({failed / tried:.0%})" if tried else f"{failed}"
    if summary.get("tolerated_failures"):
        return f"failures within tolerance: {share}, tolerated up to {ratio:.0%}"
    return f"failures past tolerance: {share}, tolerated up to {ratio:.0%}"


def deadline_line(summary: Mapping[str, Any]) -> str | None:
    """The night's deadline passed: how many items it left unstarted or cut short."""
    if not summary.get("deadline_passed"):
        return None
    unstarted = int(summary.get("not_started") or 0)
    cut = int(summary.get("interrupted") or 0)
    left = f"{unstarted} not started" + (f", {cut} cut short" if cut else "")
    return (
        f"⏰ deadline {summary.get('deadline', '?')} passed: {left}; "
        "their champions stay, and they run the next night"
    )


def finished_text(summary: Mapping[str, Any]) -> str:
    """Run finished: counts, wall time, slowest symbols, failures with reasons, net Sharpe."""
    if summary.get("started") is False:
        return not_started_text(summary)
    by_symbol: Mapping[str, Mapping[str, Any]] = summary.get("by_symbol") or {}
    exit_code = summary.get("exit_code")
    icon = SEVERITY_ICONS[severity(summary)]
    within = " · within tolerance" if exit_code == 0 and _tolerated(summary) else ""
    lines = [
        f"{icon} retrainer: run finished on {summary.get('host', '?')} (exit {exit_code}{within})",
        f"run {summary.get('run_id', '?')} · {summary.get('total_symbols', '?')} symbols",
        f"succeeded {summary.get('succeeded', 0)} · failed {summary.get('failed', 0)} "
        f"(timed out {summary.get('timed_out', 0)}) · skipped {summary.get('skipped', 0)}"
        f" · interrupted {summary.get('interrupted', 0)}"
        + (f" · not started {summary['not_started']}" if summary.get("not_started") else ""),
        f"wall time {_minutes(summary.get('total_wall_minutes'))}",
    ]
    tolerance = tolerance_line(summary)
    if tolerance:
        lines.append(tolerance)
    deadline = deadline_line(summary)
    if deadline:
        lines.append(deadline)
    lines += model_lines(summary)
    slowest = _slowest(by_symbol)
    if slowest:
        lines.append("slowest: " + ", ".join(f"{s} {_minutes(m)}" for s, m in slowest))
    best_worst = _best_and_worst(by_symbol)
    if best_worst:
        (best, best_v), (worst, worst_v) = best_worst
        lines.append(f"net Sharpe: best {best} {best_v:.2f} · worst {worst} {worst_v:.2f}")
    failures = [
        (sym, f"{s.get('status')}: {s.get('reason') or 'no reason recorded'}")
        for sym, s in by_symbol.items()
        if sym in (summary.get("failures") or {})
    ]
    if failures:
        lines.append("failures:")
        lines += _failure_lines(failures)
    return "\n".join(lines)


def model_lines(summary: Mapping[str, Any]) -> list[str]:
    """The gate's decisions (`promoted`, `first_model`, `kept_champion (reason)`), the
    symbols skipped as fresh, those whose data is stale and those in quarantine."""
    counts: Mapping[str, int] = summary.get("promotions") or {}
    parts = [
        f"{label} {counts[key]}"
        for key, label in (
            ("promoted", "promoted"),
            ("first_model", "first model"),
            ("kept_champion", "kept champion"),
            ("not_promoted", "not promoted"),
        )
        if counts.get(key)
    ]
    if summary.get("fresh"):
        parts.append(f"fresh (skipped) {summary['fresh']}")
    lines = ["models: " + " · ".join(parts)] if parts else []
    kept: Mapping[str, str] = summary.get("champions_kept") or {}
    if kept:
        lines.append("champion kept:")
        lines += _failure_lines(sorted(kept.items()))
    stale: Sequence[str] = summary.get("stale") or []
    if stale:
        shown = ", ".join(stale[:STALE_SHOWN]) + (" …" if len(stale) > STALE_SHOWN else "")
        lines.append(f"stale data ({len(stale)}): {shown}")
    quarantined: Sequence[str] = summary.get("quarantined") or []
    if quarantined:
        shown = ", ".join(quarantined[:QUARANTINED_SHOWN])
        more = " …" if len(quarantined) > QUARANTINED_SHOWN else ""
        lines.append(f"quarantined ({len(quarantined)}): {shown}{more}")
    return lines


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Parts of at most `limit` UTF-16 units, cut at line ends where a line fits."""
    parts: list[str] = []
    current = ""
    for line in text.split("\n"):
        candidate = f"{current}\n{line}" if current else line
        if utf16_len(candidate) <= limit:
            current = candidate
            continue
        if current:
            parts.append(current)
        *full, current = _hard_split(line, limit)
        parts += full
    if current or not parts:
        parts.append(current)
    return parts


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _hard_split(line: str, limit: int) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for char in line:
        width = utf16_len(char)
        if size + width > limit:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    pieces.append("".join(current))
    return pieces


def _failure_lines(failures: Sequence[tuple[str, str]]) -> list[str]:
    lines = [f"• {symbol}: {_short(reason)}" for symbol, reason in failures[:FAILURES_SHOWN]]
    if len(failures) > FAILURES_SHOWN:
        lines.append(f"… and {len(failures) - FAILURES_SHOWN} more (see engine_summary.json)")
    return lines


def _short(reason: str) -> str:
    one_line = " ".join(reason.split())
    return one_line if len(one_line) <= REASON_CHARS else one_line[: REASON_CHARS - 1] + "…"


def _minutes(value: Any) -> str:
    if not isinstance(value, int | float):
        return "?"
    return f"{value * 60:.1f} s" if value < 1 else f"{value:.1f} min"


def _slowest(by_symbol: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, float]]:
    timed = [
        (sym, float(s["minutes"]))
        for sym, s in by_symbol.items()
        if s.get("status") == "success" and isinstance(s.get("minutes"), int | float)
    ]
    return sorted(timed, key=lambda pair: (-pair[1], pair[0]))[:SLOWEST_SHOWN]


def _best_and_worst(
    by_symbol: Mapping[str, Mapping[str, Any]],
) -> tuple[tuple[str, float], tuple[str, float]] | None:
    values = []
    for sym, s in by_symbol.items():
        value = (s.get("metrics") or {}).get(SHARPE_KEY)
        if s.get("status") == "success" and isinstance(value, int | float) and math.isfinite(value):
            values.append((sym, float(value)))
    if not values:
        return None
    ordered = sorted(values, key=lambda pair: (-pair[1], pair[0]))
    return ordered[0], ordered[-1]
