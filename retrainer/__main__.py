"""`python -m retrainer` and the `retrainer` console script.

multiprocessing re-runs the main module in every child it starts (as __mp_main__), so this
one imports the CLI only when called: the children never import typer, pydantic or the
rest of the CLI, and the forkserver need not hold them (a smaller forkserver forks, and
its children exit, faster).
"""


def main() -> None:
    from retrainer.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
