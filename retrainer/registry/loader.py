"""Load a trained model, ready to predict: `retrainer.load_model(root, symbol)`.

    import retrainer
    model = retrainer.load_model("/srv/retrainer", "BTCUSDT")
    p_up = model.predict_proba(bars)  # bars: the symbol's OHLCV frame

The champion's pointer names its folder and the sha256 of the folder's manifest; the
folder is re-hashed against both before anything is loaded, so what is loaded is what
was promoted (verify=False skips this, for a folder known good). The model itself is
loaded by the trainer that made it: the trainer's function carries a `load` hook,
`train.load(folder) -> model`, and the model it returns is the trainer's own type (the
default trainer's has `predict_proba`, `features`, `params`, `metrics`, `config`;
docs/models.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import MANIFEST_NAME, Layout, sha256_file, verify_manifest
from retrainer.base.config import DEFAULT_TRAINER
from retrainer.base.errors import BadInputError
from retrainer.registry.champion import ChampionError, pointer_path, read_champion
from retrainer.training.contract import load_trainer


class ModelLoadError(Exception):
    """No model can be loaded: no champion, a folder that does not verify, a trainer that
    cannot be imported or has no `load` hook. The message names which."""


def load_model(
    root: str | Path,
    symbol: str,
    *,
    verify: bool = True,
    paths: Sequence[Path] = (),
    **options: Any,
) -> Any:
    """The symbol's champion, loaded by the trainer that made it.

    `paths`: folders to import a plug-in trainer from, as `[trainer] paths` in the config.
    `options` go to the trainer's hook (the default trainer's: device="cuda:0").
    """
    layout = Layout(Path(root).expanduser().absolute())
    try:
        champion = read_champion(layout, symbol)
    except ChampionError as exc:
        raise ModelLoadError(f"{symbol}: {exc}") from None
    if champion is None:
        raise ModelLoadError(
            f"{symbol} has no champion under {layout.root}: no {pointer_path(layout, symbol)}"
        )
    folder = champion.folder(layout.root)
    if verify:
        _check(folder, champion.manifest_sha256, f"{symbol}'s champion {champion.artifact_dir}")
    return _load(folder, champion.trainer or DEFAULT_TRAINER, paths, options)


def load_attempt(
    folder: str | Path,
    *,
    trainer: str = DEFAULT_TRAINER,
    verify: bool = True,
    paths: Sequence[Path] = (),
    **options: Any,
) -> Any:
    """Any attempt's folder (a challenger, an older model), loaded by `trainer`
    ("package.module:function"; the default trainer unless named): its config.json does
    not say which trainer made it. verify: its files against its own sha256.txt."""
    path = Path(folder).expanduser().absolute()
    if verify:
        _check(path, None, f"the attempt {path}")
    return _load(path, trainer, paths, options)


def load_hook(trainer: str, paths: Sequence[Path] = ()) -> Callable[..., Any]:
    """The trainer's `load` hook; ModelLoadError when it cannot be imported or has none."""
    try:
        train = load_trainer(trainer, paths)
    except BadInputError as exc:
        raise ModelLoadError(str(exc)) from None
    hook = getattr(train, "load", None)
    if not callable(hook):
        raise ModelLoadError(
            f"the trainer {trainer} has no load hook: it cannot load its models "
            "(a trainer offers one as `train.load = load`, load(folder) -> model; "
            "docs/trainer.md)"
        )
    return hook  # type: ignore[no-any-return]


def _check(folder: Path, manifest_sha256: str | None, what: str) -> None:
    """Every file against sha256.txt, and sha256.txt against the hash the pointer keeps."""
    problems = verify_manifest(folder)
    manifest = folder / MANIFEST_NAME
    if manifest_sha256 is not None and manifest.is_file():
        if sha256_file(manifest) != manifest_sha256:
            problems.insert(
                0, f"{manifest}: not the manifest promoted (CHAMPION records {manifest_sha256})"
            )
    if problems:
        raise ModelLoadError(f"{what} does not verify: " + "; ".join(problems))


def _load(folder: Path, trainer: str, paths: Sequence[Path], options: dict[str, Any]) -> Any:
    hook = load_hook(trainer, paths)
    try:
        return hook(folder, **options)
    except Exception as exc:  # the trainer's own failure, named with the folder
        raise ModelLoadError(
            f"{trainer} could not load {folder}: {type(exc).__name__}: {exc}"
        ) from exc
