"""``mastering``: entry point of the console script and of ``python -m mastering.cli``.

Each subcommand lives in its own module with ``register(subparsers)``; modules
import their heavy dependencies (numpy, scipy, moto, requests) only when they
run, so ``mastering --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from mastering import ENGINE, __version__
from mastering.cli import master, serve, stdio, submit
from mastering.cli.common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    CliError,
    HelpFormatter,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mastering",
        description=(
            "Spectrum's mastering backend on the command line: run the whole service "
            "locally, submit jobs to it (or to a deployed API), master files directly, "
            "or serve the MasterMatcherVST plugin."
        ),
        epilog=f"Run 'mastering COMMAND --help' for a command's options.\n{EXIT_CODES_HELP}",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} ({ENGINE})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (serve, submit, master, stdio):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except CliError as error:
        print(f"mastering {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"mastering {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if os.environ.get("MASTERING_DEBUG"):
            raise
        print(
            f"mastering {args.command}: unexpected error: {type(error).__name__}: {error} "
            "(set MASTERING_DEBUG=1 to see where)",
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
