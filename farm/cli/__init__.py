"""cli"""

import sys


def main() -> None:
    """Console script entry. Importing the app takes a moment (typer, SQLAlchemy): a Ctrl-C
    then is one line too, not an import traceback."""
    try:
        from farm.cli.app import main as run
    except KeyboardInterrupt:
        sys.stderr.write("farm: interrupted\n")
        sys.exit(130)
    run()
