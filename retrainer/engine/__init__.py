"""Work items, the ledger, modes, the supervisor, workers and drivers."""
