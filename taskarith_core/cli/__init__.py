"""Command-line interface: one module per group of subcommands, listed explicitly below.

Every user mistake surfaces as :class:`~taskarith_core.errors.InputError`, printed as one line on
stderr with exit code 2. Progress goes to stderr as a tqdm bar.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

from ..errors import QUOTE_LIMIT, InputError, quote
from . import analyse_cmds, engine_cmds, model_cmds, real_cmds, run_cmd, zoo_cmds

__all__ = ["build_parser", "main"]

# Each module has ``register(subparsers)``; a command sets ``func(args) -> int`` as its default.
COMMAND_MODULES = [engine_cmds, zoo_cmds, analyse_cmds, model_cmds, real_cmds, run_cmd]


#: a value argparse quoted that is longer than a user value may be shown
_QUOTED = re.compile("'[^'\\n]{" + str(QUOTE_LIMIT - 1) + ",}'")


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes get one line on stderr and exit code 2, like every other input error."""

    def error(self, message: str):  # type: ignore[override]
        # argparse repeats a rejected value whole ("invalid choice: '...'"): cut each quoted value
        # as errors.quote does, and the whole line as InputError does
        message = _QUOTED.sub(lambda m: quote(m.group(0)[1:-1]), message)
        text = str(InputError(f"{self.prog}: {message} (see --help)")).replace("\n", " ")
        self.exit(2, f"error: {text}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m taskarith_core",
        description="Merge, negate and analyse task vectors of CLIP vision models.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors and --help: keep main() callable in-process
        return int(exc.code or 0)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        # one line even when a typed path holds a line break
        print("error: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
