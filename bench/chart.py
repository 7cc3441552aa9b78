"""The PNG beside the JSON: speedup against k for every system, with the ideal line."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def speedup_chart(report: Mapping[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, (sleep_ax, cpu_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    ks_max = 1
    for name, system in report["systems"].items():
        if "skipped" in system or not system.get("sleep"):
            continue
        style = {"linewidth": 2.5, "color": "black"} if name == "retrainer" else {}
        ks = [int(k) for k, v in system["sleep"].items() if "speedup" in v]
        speedups = [system["sleep"][str(k)]["speedup"] for k in ks]
        ks_max = max([ks_max, *ks])
        sleep_ax.plot(ks, speedups, marker="o", label=system["label"], **style)
        cpu = system.get("cpu_speedup")
        if cpu:
            cpu_ax.plot(
                [1, cpu["k"]], [1.0, cpu["median"]], marker="o", label=system["label"], **style
            )
    sleep_ax.plot([1, ks_max], [1, ks_max], linestyle="--", color="grey", label="ideal")
    cpu_ax.plot([1, 2], [1, 2], linestyle="--", color="grey", label="ideal")
    sleep_ax.set(
        title="sleep-bound items (0.2 s each)",
        xlabel="k (items at once)",
        ylabel="speedup vs k = 1",
        xscale="log",
        yscale="log",
    )
    sleep_ax.set_xticks([k for k in (1, 2, 4, 8, 16, 32) if k <= ks_max])
    sleep_ax.set_xticklabels([str(k) for k in (1, 2, 4, 8, 16, 32) if k <= ks_max])
    cpu_ax.set(
        title="CPU-bound items (~0.25 s each), 2 cores",
        xlabel="k (items at once)",
        ylabel="speedup vs k = 1",
        xticks=[1, 2],
    )
    for ax in (sleep_ax, cpu_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
