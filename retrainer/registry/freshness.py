"""Freshness: has anything a symbol's champion was trained on changed since?

A model is a function of its data, its trainer's code and parameters, its costs and the
seed. `inputs_key` hashes them all; the champion's pointer keeps the key it was trained
on, and a night skips a symbol whose key is unchanged (`fresh`) rather than training the
same model again. The data is hashed by value (UTC timestamps and OHLCV floats), so a
file rewritten with the same bars (a Parquet re-encoded, a CSV turned Parquet) is still
fresh. The code is the trainer's package (its .py files), retrainer's version and the
installed versions of the libraries a model depends on: a change to any of them retrains
every symbol.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from retrainer.base.version import __version__


@lru_cache(maxsize=32)
def trainer_code_sha256(spec: str) -> str:
    """sha256 of the trainer's code, in path order: its package's .py files (subpackages
    included), or the module file alone when it is not in a package; of the spec alone
    when its source cannot be found."""
    module = spec.partition(":")[0]
    digest = hashlib.sha256(spec.encode("utf-8"))
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    origin = Path(found.origin) if found is not None and found.origin else None
    if origin is None or origin.suffix != ".py" or not origin.is_file():
        return digest.hexdigest()
    package = origin.parent
    files = sorted(package.rglob("*.py")) if (package / "__init__.py").is_file() else [origin]
    for path in files:
        name = path.relative_to(package).as_posix()
        digest.update(name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


# Libraries whose upgrade can change a model trained on the same inputs.
MODEL_LIBRARIES = ("torch", "numpy", "pandas", "pyarrow", "scikit-learn", "lightgbm", "xgboost")


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """The installed versions of MODEL_LIBRARIES (from their metadata: nothing imported)."""
    versions = {}
    for name in MODEL_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def inputs_key(
    *,
    data_sha256: str,
    trainer: str,
    params: Mapping[str, Any],
    costs: Mapping[str, Any],
    seed: int,
) -> str:
    """One hex digest of everything that makes the model what it is."""
    parts = {
        "data": data_sha256,
        "trainer": trainer,
        "code": trainer_code_sha256(trainer),
        "retrainer": __version__,
        "libraries": library_versions(),
        "params": params,
        "costs": costs,
        "seed": seed,
    }
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
