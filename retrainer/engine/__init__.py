"""The engine: the one loop, the attempt contract, the supervisor, the worker, drivers."""
