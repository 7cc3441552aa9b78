"""Named exit codes of the `retrainer` command: the only place they are defined."""

from enum import IntEnum


class ExitCode(IntEnum):
    # every symbol succeeded or was skipped (or a dry run), or the failures stayed within
    # [run] tolerated_failure_ratio
    OK = 0
    SOME_FAILED = 1  # at least one symbol ended failed or timeout (past that ratio)
    BAD_INPUT = 2  # bad config, symbols or data: nothing was started
    LOCKED = 3  # another run holds the lock on this root
    # [run] deadline passed with items not started (or cut short): they keep their
    # champions and run the next night; failures of the items that ran are in the summary
    DEADLINE_PASSED = 4
    INTERNAL_ERROR = 70  # a bug in retrainer itself (sysexits EX_SOFTWARE)
    IO_ERROR = 74  # the run's own folders could not be written: disk full, read-only (EX_IOERR)
    INTERRUPTED = 130  # stopped by SIGINT/SIGTERM before the run finished


# Each code in a few words, for one-line reports (status, the cron mail, notifications).
MEANINGS: dict[int, str] = {
    ExitCode.OK: "ok",
    ExitCode.SOME_FAILED: "some symbols failed",
    ExitCode.BAD_INPUT: "bad input",
    ExitCode.LOCKED: "another run holds the lock",
    ExitCode.DEADLINE_PASSED: "deadline passed, some symbols not started",
    ExitCode.INTERNAL_ERROR: "internal error",
    ExitCode.IO_ERROR: "cannot write the run's files",
    ExitCode.INTERRUPTED: "interrupted",
}


def meaning(code: int | None) -> str:
    if code is None:
        return "no exit code recorded"
    return MEANINGS.get(code, "unknown exit code")
