"""The promotion gate: does tonight's challenger replace the symbol's champion?

Rules in the style of MLflow's MetricThreshold: each names a metric and its direction, a
floor the challenger must reach (`threshold`) and how much better than the champion it
must be (`min_absolute_change`, `min_relative_change`; 0 means "not worse"). Guards are
metrics that must not degrade by more than a tolerance. Both are judged on the same
span: the champion re-evaluated on the challenger's test span when the trainer can
(basis "re-evaluated"), else the metrics each reported when it was trained ("reported").

Pure: the decision and its inputs, nothing written (promotion.py acts on it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from retrainer.base.config import PromoteSettings, PromotionGuard, PromotionRule

PromoteMode = Literal["always", "gated", "never"]
TEST_ROWS_KEYS = ("test_bars", "n_test_rows")


class Decision(StrEnum):
    PROMOTED = "promoted"  # replaced the champion
    FIRST_MODEL = "first_model"  # the symbol had no champion: this one is
    KEPT_CHAMPION = "kept_champion"  # the champion stays; `reason` says why
    NOT_PROMOTED = "not_promoted"  # no champion, and this one did not become it


class Basis(StrEnum):
    RE_EVALUATED = "re-evaluated"  # the champion scored on the challenger's test span
    REPORTED = "reported"  # each model's own metrics.json
    NONE = "none"  # nothing compared (no champion, or promotion always/never)


@dataclass(frozen=True)
class Check:
    """One rule or guard, judged: the values compared and whether it passed."""

    metric: str
    kind: Literal["rule", "guard", "floor", "test_rows"]
    passed: bool
    challenger: float | None
    champion: float | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class Promotion:
    decision: Decision
    reason: str
    mode: PromoteMode
    basis: Basis = Basis.NONE
    champion_dir: str | None = None  # the champion it was compared with
    checks: tuple[Check, ...] = field(default_factory=tuple)
    note: str = ""  # what a reader should know of how it was judged

    @property
    def becomes_champion(self) -> bool:
        return self.decision in (Decision.PROMOTED, Decision.FIRST_MODEL)

    @property
    def label(self) -> str:
        """`kept_champion (reason)` as messages show it; the others as they are."""
        if self.decision in (Decision.KEPT_CHAMPION, Decision.NOT_PROMOTED):
            return f"{self.decision.value} ({self.reason})"
        return self.decision.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision.value,
            "reason": self.reason,
            "mode": self.mode,
            "basis": self.basis.value,
            "champion_dir": self.champion_dir,
            "checks": [c.to_dict() for c in self.checks],
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Promotion:
        return cls(
            decision=Decision(raw["decision"]),
            reason=str(raw.get("reason", "")),
            mode=raw.get("mode", "gated"),
            basis=Basis(raw.get("basis", Basis.NONE.value)),
            champion_dir=raw.get("champion_dir"),
            checks=tuple(Check(**c) for c in raw.get("checks", ())),
            note=str(raw.get("note", "")),
        )


def number(metrics: Mapping[str, Any] | None, key: str) -> float | None:
    """A finite number from metrics, else None (missing, null, NaN, not a number)."""
    if not metrics:
        return None
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def decide(
    settings: PromoteSettings,
    mode: PromoteMode,
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    *,
    basis: Basis,
    champion_dir: str | None,
    challenger_problems: Sequence[str] = (),
    champion_problems: Sequence[str] = (),
) -> Promotion:
    """challenger: its metrics; champion: the champion's on the same span (None: the
    symbol has no champion). A challenger that does not verify is never promoted; a
    champion that does not verify is replaced by one that does."""
    has_champion = champion_dir is not None
    if challenger_problems:
        return _keep(mode, has_champion, champion_dir, f"does not verify: {challenger_problems[0]}")
    if mode == "never":
        return _keep(mode, has_champion, champion_dir, "promotion off (--promote never)")
    if not has_champion:
        if mode == "always":
            return Promotion(Decision.FIRST_MODEL, "no champion yet", mode)
        checks = (_test_rows(settings, challenger), *_floors(settings.rules, challenger))
        return _judged(mode, checks, None, Basis.NONE, first=True)
    if champion_problems:  # no usable model in production: judged as a first model is
        reason = f"champion does not verify: {champion_problems[0]}"
        floors = (_test_rows(settings, challenger), *_floors(settings.rules, challenger))
        failed = [c.detail for c in floors if not c.passed]
        if failed and mode != "always":
            why = f"{reason}; {'; '.join(failed)}"
            return Promotion(Decision.NOT_PROMOTED, why, mode, Basis.NONE, champion_dir, floors)
        return Promotion(Decision.PROMOTED, reason, mode, Basis.NONE, champion_dir, floors)
    if mode == "always":
        return Promotion(Decision.PROMOTED, "--promote always", mode, Basis.NONE, champion_dir)
    checks = (
        _test_rows(settings, challenger),
        *_floors(settings.rules, challenger),
        *(_rule(rule, challenger, champion or {}) for rule in settings.rules),
        *(_guard(guard, challenger, champion or {}) for guard in settings.guards),
    )
    return _judged(mode, checks, champion_dir, basis, first=False)


def _keep(mode: PromoteMode, has_champion: bool, champion_dir: str | None, why: str) -> Promotion:
    decision = Decision.KEPT_CHAMPION if has_champion else Decision.NOT_PROMOTED
    return Promotion(decision, why, mode, Basis.NONE, champion_dir)


def _judged(
    mode: PromoteMode,
    checks: tuple[Check, ...],
    champion_dir: str | None,
    basis: Basis,
    *,
    first: bool,
) -> Promotion:
    failed = [c for c in checks if not c.passed]
    if failed:
        decision = Decision.NOT_PROMOTED if first else Decision.KEPT_CHAMPION
        reason = "; ".join(c.detail for c in failed)
        return Promotion(decision, reason, mode, basis, champion_dir, checks)
    if first:
        return Promotion(Decision.FIRST_MODEL, "no champion yet", mode, basis, None, checks)
    passed = [c.detail for c in checks if c.kind == "rule"]
    reason = "; ".join(passed) or "passed every check"
    return Promotion(Decision.PROMOTED, reason, mode, basis, champion_dir, checks)


def _test_rows(settings: PromoteSettings, challenger: Mapping[str, Any]) -> Check:
    rows = next((v for k in TEST_ROWS_KEYS if (v := number(challenger, k)) is not None), None)
    if rows is None:  # a trainer that does not say: the rule cannot hold a model back forever
        return Check("test_rows", "test_rows", True, None, None, "test rows not reported")
    passed = rows >= settings.min_test_rows
    shown = "unknown" if rows is None else f"{rows:g}"
    detail = f"test rows {shown} < min_test_rows {settings.min_test_rows}" if not passed else ""
    return Check("test_rows", "test_rows", passed, rows, None, detail)


def _floors(rules: Sequence[PromotionRule], challenger: Mapping[str, Any]) -> list[Check]:
    checks = []
    for rule in rules:
        if rule.threshold is None:
            continue
        value = number(challenger, rule.metric)
        ok = value is not None and (
            value >= rule.threshold if rule.greater_is_better else value <= rule.threshold
        )
        sign = ">=" if rule.greater_is_better else "<="
        detail = f"{rule.metric} {_shown(value)} is not {sign} threshold {rule.threshold:g}"
        checks.append(Check(rule.metric, "floor", ok, value, None, "" if ok else detail))
    return checks


def _rule(rule: PromotionRule, challenger: Mapping[str, Any], champion: Mapping[str, Any]) -> Check:
    new, old = number(challenger, rule.metric), number(champion, rule.metric)
    if rule.min_absolute_change is None and rule.min_relative_change is None:
        return Check(rule.metric, "rule", True, new, old, f"{rule.metric} not compared")
    if new is None and old is None:  # e.g. net figures of a symbol that is not tradable
        return Check(rule.metric, "rule", True, new, old, f"{rule.metric}: neither has it")
    if new is None:
        return Check(
            rule.metric, "rule", False, new, old, f"{rule.metric} missing for the challenger"
        )
    if old is None:  # a champion from an older trainer: not comparable, never a lock
        return Check(rule.metric, "rule", True, new, old, f"{rule.metric}: champion has none")
    gain = new - old if rule.greater_is_better else old - new  # > 0: the challenger is better
    needed = max(rule.min_absolute_change or 0.0, (rule.min_relative_change or 0.0) * abs(old))
    passed = gain >= needed
    relation = "better than" if gain > 0 else "equal to" if gain == 0 else "worse than"
    detail = f"{rule.metric} {new:.6g} {relation} champion {old:.6g}"
    if not passed and needed > 0 and gain >= 0:
        detail += f" by less than {needed:.6g}"
    return Check(rule.metric, "rule", passed, new, old, detail)


def _guard(
    guard: PromotionGuard, challenger: Mapping[str, Any], champion: Mapping[str, Any]
) -> Check:
    new, old = number(challenger, guard.metric), number(champion, guard.metric)
    if new is None and old is None:
        return Check(guard.metric, "guard", True, new, old, "")
    if new is None:
        detail = f"guard {guard.metric} missing for the challenger"
        return Check(guard.metric, "guard", False, new, old, detail)
    if old is None:
        return Check(guard.metric, "guard", True, new, old, "")
    loss = old - new if guard.greater_is_better else new - old  # > 0: the challenger is worse
    passed = loss <= guard.tolerance
    detail = (
        f"guard {guard.metric} {new:.6g} worse than champion {old:.6g} "
        f"by more than {guard.tolerance:g}"
    )
    return Check(guard.metric, "guard", passed, new, old, "" if passed else detail)


def _shown(value: float | None) -> str:
    return "missing" if value is None else f"{value:.6g}"
