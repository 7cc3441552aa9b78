"""A per-symbol parameter search's candidates ([search], docs/search.md): pure, no I/O.

grid    the cartesian product of the listed values, keys in the config's order, values in
        the order given; the first `budget` of them.
random  `budget` draws from `random.Random` seeded by ([search] seed, symbol): a list is a
        choice, a table `{low, high, log = false, integer = false}` a range.

Duplicates are removed (a random search over few values may try fewer than `budget`). The
candidates are named c00, c01… (wider for a budget over 100), in the order drawn: that
order is the tie-break of the choice, so it must not depend on anything but the config.

Every candidate of a symbol trains with the SAME seed (planner.symbol_seed of the run's
seed and the symbol): candidates then differ only by their params, so the one chosen is
chosen for its params and not for a lucky initialisation, and the same search picks the
same candidate night after night, in any mode, window or driver.

Bad input is refused before anything starts, naming the key: a key the trainer's params
model has no field for, a value it rejects (alone, or as a combination in one candidate),
a range under grid, a trainer with no params model at all.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from retrainer.base.config import SearchSettings
from retrainer.base.errors import BadInputError
from retrainer.training.contract import Trainer, validate_trainer_params

RANGE_KEYS = frozenset({"low", "high", "log", "integer"})
# Random draws from a range keep this many significant digits: readable params, and the
# same draw on every machine.
DRAW_DIGITS = 6
_PREFIX = "trainer.params: "


@dataclass(frozen=True)
class Candidate:
    """One point of the search: its name and the params it sets over [trainer.params]."""

    name: str
    params: Mapping[str, Any]


def candidates(search: SearchSettings, symbol: str) -> list[Candidate]:
    """The symbol's candidates, in the order that breaks ties (see the module)."""
    if search.method == "grid":
        points = _grid(search)
    else:
        points = _random(search, symbol)
    unique: dict[str, dict[str, Any]] = {}
    for point in points:
        unique.setdefault(json.dumps(point, sort_keys=True), point)
    width = max(2, len(str(search.budget - 1)))
    return [Candidate(f"c{i:0{width}d}", point) for i, point in enumerate(unique.values())]


def _grid(search: SearchSettings) -> list[dict[str, Any]]:
    lists = []
    for key, values in search.space.items():
        if not isinstance(values, list):
            raise BadInputError(
                f'search.space.{key}: a range {{low, high}} needs method = "random"; a grid '
                "tries listed values only (give a list, e.g. [0.001, 0.01])"
            )
        lists.append(values)
    keys = list(search.space)
    product = itertools.islice(itertools.product(*lists), search.budget)
    return [dict(zip(keys, values, strict=True)) for values in product]


def _random(search: SearchSettings, symbol: str) -> list[dict[str, Any]]:
    rng = random.Random(f"{search.seed}:{symbol}")
    return [
        {key: _draw(rng, key, spec) for key, spec in search.space.items()}
        for _ in range(search.budget)
    ]


def _draw(rng: random.Random, key: str, spec: list[Any] | dict[str, Any]) -> Any:
    if isinstance(spec, list):
        return spec[rng.randrange(len(spec))]
    low, high, log, integer = _range(key, spec)
    if log:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    if integer:
        return min(int(high), max(int(low), round(value)))
    return float(f"{value:.{DRAW_DIGITS}g}")


def _range(key: str, spec: Mapping[str, Any]) -> tuple[float, float, bool, bool]:
    unknown = sorted(set(spec) - RANGE_KEYS)
    if unknown or "low" not in spec or "high" not in spec:
        raise BadInputError(
            f"search.space.{key}: a range is {{low, high, log = false, integer = false}}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else " (low and high needed)")
        )
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        raise BadInputError(f"search.space.{key}: low and high must be numbers")
    if low > high:
        raise BadInputError(f"search.space.{key}: low ({low}) is above high ({high})")
    log, integer = bool(spec.get("log", False)), bool(spec.get("integer", False))
    if log and low <= 0:
        raise BadInputError(f"search.space.{key}: a log range needs low > 0 (got {low})")
    return float(low), float(high), log, integer


def check_space(
    search: SearchSettings, trainer: Trainer, plugin: str, base: Mapping[str, Any]
) -> None:
    """Before anything starts: every key a parameter of the trainer, every listed value
    (and each range's ends) accepted by its params model over [trainer.params] `base`."""
    fields = _fields(trainer, plugin)
    if not search.space:
        raise BadInputError("search.space: empty; name at least one parameter to search")
    for key, spec in search.space.items():
        if key not in fields:
            raise BadInputError(
                f"search.space.{key}: the trainer {plugin} has no parameter {key}; its "
                f"parameters: {', '.join(fields)}"
            )
        if isinstance(spec, list):
            if not spec:
                raise BadInputError(f"search.space.{key}: an empty list; give the values to try")
            values: Sequence[Any] = spec
        else:
            if search.method == "grid":
                _grid(search)  # names the range
            low, high, _, integer = _range(key, spec)
            values = [int(low), int(high)] if integer else [low, high]
        for value in values:
            _validated(trainer, base, {key: value}, key)


def candidate_params(
    trainer: Trainer, base: Mapping[str, Any], candidate: Candidate
) -> dict[str, Any]:
    """[trainer.params] overlaid by the candidate, validated by the trainer's model; a
    combination it rejects names the candidate's keys."""
    try:
        return validate_trainer_params(trainer, {**base, **candidate.params})
    except BadInputError as exc:
        combined = _message(exc)
    for key, value in candidate.params.items():  # the first key rejected alone
        _validated(trainer, base, {key: value}, key)
    keys = ", ".join(f"search.space.{k} = {_shown(v)}" for k, v in candidate.params.items())
    raise BadInputError(f"{keys} ({candidate.name}): {combined}")


def _validated(
    trainer: Trainer, base: Mapping[str, Any], overlay: Mapping[str, Any], key: str
) -> dict[str, Any]:
    try:
        return validate_trainer_params(trainer, {**base, **overlay})
    except BadInputError as exc:
        raise BadInputError(
            f"search.space.{key} = {_shown(overlay[key])}: {_message(exc)}"
        ) from None


def _fields(trainer: Trainer, plugin: str) -> list[str]:
    model = getattr(trainer, "params_model", None)
    fields = getattr(model, "model_fields", None)
    if not isinstance(fields, Mapping):
        raise BadInputError(
            f"search: the trainer {plugin} declares no params_model, so its parameters "
            "cannot be searched (give it a pydantic model: docs/trainer.md)"
        )
    return list(fields)


def _message(exc: BadInputError) -> str:
    text = str(exc)
    return text[len(_PREFIX) :] if text.startswith(_PREFIX) else text


def _shown(value: Any) -> str:
    return json.dumps(value)
