"""`python -m retrainer` and the `retrainer` console script.

The CLI is imported when called, not when this module is: nothing that imports the
package (the zygote, which forks the attempts, among others) pays for typer and pydantic.
"""


def main() -> None:
    from retrainer.cli.app import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
