"""What a scheduled night would miss of the shell that set the schedule up.

cron and systemd start a job with a bare environment: no PYTHONPATH, not the current
folder, none of this shell's RETRAINER_* variables. A night that works by hand because of
one of them exits 2 every night once scheduled. `retrainer schedule` names each such
dependence with its fix instead of carrying it over silently: a schedule that copies one
shell's environment breaks the day that shell changes, and would copy secrets into files.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from retrainer.base.config import CONFIG_ENV, ENV_PREFIX, Settings

# Imports nothing: finds the plug-in's top-level module as the scheduled run would.
_FIND = (
    "import importlib.util, json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
    "sys.exit(0 if importlib.util.find_spec(sys.argv[2]) else 3)"
)
BARE_ENV = {"PATH": "/usr/bin:/bin"}  # what cron gives a job, near enough
FIND_TIMEOUT_S = 60


def schedule_warnings(
    settings: Settings, config: Path | None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """One paragraph per thing the scheduled run would miss, each with its fix."""
    environ = os.environ if environ is None else environ
    warnings = _plugin_warnings(settings, config, environ)
    names = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k != CONFIG_ENV)
    if names:
        warnings.append(
            f"this shell sets {', '.join(names)}; the scheduled run will not see "
            f"{'it' if len(names) == 1 else 'them'} (cron and systemd start with a bare "
            "environment): put settings in the config file and secrets in a secrets file "
            "([notify] secrets_file, also usable as systemd's EnvironmentFile=)"
        )
    return warnings


def _plugin_warnings(
    settings: Settings, config: Path | None, environ: Mapping[str, str]
) -> list[str]:
    trainer = settings.trainer
    missing = [p for p in trainer.paths if not p.is_dir()]
    if missing:
        return [f"trainer.paths: {', '.join(map(str, missing))} is not a folder"]
    top = trainer.plugin.partition(":")[0].split(".")[0]
    if importable_in_a_bare_run(top, trainer.paths):
        return []
    folder = folder_providing(top)
    if folder is None:
        return [
            f"trainer.plugin {trainer.plugin!r}: {top} cannot be imported, here or in the "
            "scheduled run; every night would exit 2"
        ]
    via = "PYTHONPATH" if str(folder) in _pythonpath(environ) else "this shell's sys.path"
    if str(folder) == os.getcwd():
        via = "the current folder"
    # Relative to the config's folder when it is inside it (the two then move together).
    inside = config is not None and folder.is_relative_to(config.resolve().parent)
    suggested = os.path.relpath(folder, config.resolve().parent) if config and inside else folder
    return [
        f"trainer.plugin {trainer.plugin!r}: {top} is found here only through {via} "
        f"({folder}), which cron and systemd do not give the run: every scheduled night "
        "would exit 2. Name its folder in the config (relative to the config's folder):\n"
        f"  [trainer]\n  paths = [{json.dumps(str(suggested))}]\n"
        "or install the plug-in into this venv"
    ]


def importable_in_a_bare_run(module: str, paths: list[Path]) -> bool:
    """Whether a fresh interpreter of this venv, with no PYTHON* variable and none of
    this shell's environment, finds the module once `paths` lead its sys.path."""
    try:
        found = subprocess.run(
            [sys.executable, "-I", "-c", _FIND, json.dumps([str(p) for p in paths]), module],
            env=BARE_ENV,
            cwd="/",
            capture_output=True,
            timeout=FIND_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: say nothing rather than something wrong
    return found.returncode == 0


def folder_providing(module: str) -> Path | None:
    """The entry of this process's sys.path that the module is found in."""
    for entry in sys.path:
        folder = Path(entry or os.getcwd())
        if importlib.machinery.PathFinder.find_spec(module, [str(folder)]) is not None:
            return folder.resolve()
    return None


def _pythonpath(environ: Mapping[str, str]) -> set[str]:
    return {
        str(Path(p or os.getcwd()).resolve())
        for p in environ.get("PYTHONPATH", "").split(os.pathsep)
        if environ.get("PYTHONPATH")
    }
