"""The promotion step of a night: each success meets the gate, and the symbol's CHAMPION
pointer moves only when the gate says so.

An item listener placed first: when the engine records a success, it judges the
challenger against the champion the plan found (re-scored on the challenger's test span
by the attempt itself when the trainer can: champion_eval.json), writes the pointer
(atomic, fsynced) if the challenger wins, records the decision in the ledger entry (the
summary, the report, the notifications and MLflow read it there) and mirrors the pointer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from retrainer.base.artifacts import (
    CHAMPION_EVAL_FILE,
    Layout,
    read_json_object,
    verify_manifest,
)
from retrainer.base.clock import iso, now_utc
from retrainer.base.config import PromoteSettings
from retrainer.engine.events import ItemListener
from retrainer.ledger.entries import LedgerEntry
from retrainer.ledger.journal import Ledger
from retrainer.mirror.uploads import Uploader
from retrainer.plan.planner import Plan, PlanItem
from retrainer.registry.champion import (
    Champion,
    champion_problems,
    pointer_path,
    write_champion,
)
from retrainer.registry.gate import Basis, PromoteMode, Promotion, decide

MODEL_PROMOTED = "model_promoted"
CHAMPION_KEPT = "champion_kept"


class PromotionListener(ItemListener):
    def __init__(
        self,
        plan: Plan,
        ledger: Ledger,
        settings: PromoteSettings,
        run_id: str,
        uploader: Uploader | None = None,
    ) -> None:
        self._items = {item.item_id: item for item in plan.items}
        self._layout = plan.layout
        self._trainer = plan.trainer
        self._ledger = ledger
        self._settings = settings
        self._mode: PromoteMode = plan.policy.promote
        self._run_id = run_id
        self._uploader = uploader
        self._log = structlog.get_logger()

    def item_succeeded(self, item_id: str, out_dir: Path, files: Sequence[Path]) -> None:
        item, entry = self._items.get(item_id), self._ledger.get(item_id)
        if item is None or entry is None:
            return
        if item.champion is not None and item.champion.artifact_dir == entry.artifact_dir:
            # The scheduler stopped after it promoted this one and before it recorded so.
            self._ledger.record(
                replace(entry, promotion=already_champion(item.champion, self._mode))
            )
            return
        promotion = judge(self._layout, self._settings, self._mode, item, entry, out_dir)
        if promotion.becomes_champion:
            path = write_champion(
                self._layout, self._pointer(item, entry, promotion, self._metrics(out_dir))
            )
            if self._uploader is not None:
                self._uploader.submit([path], item_id, record=False)
        # With the inputs it was judged on: a night with the same ones need not train again.
        decision = {**promotion.to_dict(), "inputs_key": item.inputs_key}
        self._ledger.record(replace(entry, promotion=decision))
        self._log.info(
            MODEL_PROMOTED if promotion.becomes_champion else CHAMPION_KEPT,
            symbol=item.symbol,
            decision=promotion.decision.value,
            reason=promotion.reason,
            basis=promotion.basis.value,
            artifact_dir=entry.artifact_dir,
            champion_dir=promotion.champion_dir,
        )

    def _metrics(self, out_dir: Path) -> dict[str, Any]:
        return read_json_object(out_dir / "metrics.json") or {}

    def _pointer(
        self, item: PlanItem, entry: LedgerEntry, promotion: Promotion, metrics: Mapping[str, Any]
    ) -> Champion:
        scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}
        return Champion(
            symbol=item.symbol,
            artifact_dir=entry.artifact_dir or "",
            manifest_sha256=entry.manifest_sha256 or "",
            promoted_at=iso(now_utc()),
            run_id=self._run_id,
            decision=promotion.decision.value,
            reason=promotion.reason,
            trainer=self._trainer,
            inputs_key=item.inputs_key,
            metrics=scalars,
            previous=item.champion.artifact_dir if item.champion else None,
        )


def promote_settings_for(settings: PromoteSettings, trainer: object) -> PromoteSettings:
    """[promote] as the config gives it, the rules and guards a trainer declares
    (`promotion_rules`, `promotion_guards`) standing in for the defaults the config left
    alone: the default rules name the default trainer's figures."""
    update: dict[str, Any] = {}
    for key, attr in (("rules", "promotion_rules"), ("guards", "promotion_guards")):
        declared = getattr(trainer, attr, None)
        if declared is not None and key not in settings.model_fields_set:
            update[key] = [dict(item) for item in declared]
    if not update:
        return settings
    return PromoteSettings.model_validate({**settings.model_dump(), **update})


def already_champion(champion: Champion, mode: PromoteMode) -> dict[str, Any]:
    """The decision its pointer kept, for a success the ledger never recorded judged."""
    return {
        "decision": champion.decision,
        "reason": champion.reason,
        "mode": mode,
        "basis": Basis.NONE.value,
        "champion_dir": champion.previous,
        "checks": [],
        "note": "recorded from the CHAMPION pointer written before the scheduler stopped",
    }


def judge(
    layout: Layout,
    settings: PromoteSettings,
    mode: PromoteMode,
    item: PlanItem,
    entry: LedgerEntry,
    out_dir: Path,
) -> Promotion:
    """The gate's decision on one success, with what it compared."""
    challenger = read_json_object(out_dir / "metrics.json") or dict(entry.metrics or {})
    mine = verify_manifest(out_dir, entry.manifest_sha256)
    champion = item.champion
    if champion is None and item.champion_problem is None:
        return decide(
            settings,
            mode,
            challenger,
            None,
            basis=Basis.NONE,
            champion_dir=None,
            challenger_problems=mine,
        )
    if champion is None:  # a pointer that cannot be read: no model is in production
        where = layout.relative(pointer_path(layout, item.symbol))
        return decide(
            settings,
            mode,
            challenger,
            {},
            basis=Basis.NONE,
            champion_dir=where,
            challenger_problems=mine,
            champion_problems=[item.champion_problem or "unreadable"],
        )
    theirs = champion_problems(layout, champion)
    scored = read_json_object(out_dir / CHAMPION_EVAL_FILE)
    metrics, basis = champion_metrics(layout, champion, scored)
    promotion = decide(
        settings,
        mode,
        challenger,
        metrics,
        basis=basis,
        champion_dir=champion.artifact_dir,
        challenger_problems=mine,
        champion_problems=theirs,
    )
    if scored is not None and not scored.get("ok") and promotion.basis is Basis.REPORTED:
        failure = f"{scored.get('error_type')}: {scored.get('error')}"
        note = f"the champion could not be re-scored ({failure}): reported metrics compared"
        promotion = replace(promotion, note=note)
    return promotion


def champion_metrics(
    layout: Layout, champion: Champion, scored: dict[str, Any] | None
) -> tuple[dict[str, Any], Basis]:
    """The champion scored on the challenger's test span if the attempt did so (scored:
    its champion_eval.json), else the metrics it reported when it was trained."""
    if scored and scored.get("ok") and isinstance(scored.get("metrics"), dict):
        return dict(scored["metrics"]), Basis.RE_EVALUATED
    reported = read_json_object(champion.folder(layout.root) / "metrics.json")
    return (reported if reported is not None else dict(champion.metrics)), Basis.REPORTED
