"""What each figure of `make bench` runs: the sizes of its workloads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """What each figure runs; the defaults are the issue's, --quick is for development."""

    n_noop: int = 1000
    k_noop: int = 2
    n_cpu: int = 16
    ks_cpu: tuple[int, ...] = (1, 2)
    n_sleep: int = 64
    ks_sleep: tuple[int, ...] = (1, 2, 4, 8, 16)
    ledger_symbols: tuple[int, int] = (10, 10_000)
    ledger_updates: int = 4000
    n_dry: int = 1000
    item_start_n: int = 20
    repeats: int = 3
    systems: tuple[str, ...] = ("loky", "processpool", "dask", "ray")

    def jobs(self) -> list[tuple[str, int, int]]:
        """(kind, n, k) for every workload, retrainer's and the peers' alike."""
        jobs = [("noop", self.n_noop, self.k_noop)]
        jobs += [("cpu", self.n_cpu, k) for k in self.ks_cpu]
        jobs += [("sleep", self.n_sleep, k) for k in self.ks_sleep]
        return jobs


QUICK = Sizes(
    n_noop=40,
    n_cpu=4,
    n_sleep=8,
    ks_sleep=(1, 2, 4),
    ledger_symbols=(10, 1000),
    ledger_updates=300,
    n_dry=40,
    item_start_n=5,
)
