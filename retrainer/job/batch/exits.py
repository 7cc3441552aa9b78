"""The child's exit codes, which the job's retry strategy reads (request.retry_strategy).

Batch retries an attempt whose exit no rule matches; ours name every end: a code to retry
(the local engine would retry it too), a code for an end a retry cannot change.
"""

from __future__ import annotations

from retrainer.ledger.entries import ItemState, Outcome

EXIT_OK = 0
# sysexits EX_DATAERR: bad data, a bad plan, a trainer's parameters: the same next time.
EXIT_FOR_GOOD = 65
# sysexits EX_TEMPFAIL: a crash, a timeout, the memory cap, the bucket out of reach.
EXIT_RETRY = 75
# What a retry cannot change: the same input gives the same error.
FOR_GOOD_ERRORS = frozenset({"DataError", "BadInputError", "ValidationError"})


def exit_code_for(outcome: Outcome) -> int:
    """How a recorded attempt ends the container."""
    if outcome.state is ItemState.SUCCESS:
        return EXIT_OK
    if outcome.error_type in FOR_GOOD_ERRORS:
        return EXIT_FOR_GOOD
    return EXIT_RETRY
