"""``python -m clad_lite <command>``: one entry point for every job of the project.

Each command lives in the module that owns its idea and registers itself through a
``register(subparsers)`` function that adds one sub-parser with ``set_defaults(func=...)``;
``func(args)`` returns the process exit code. Modules are imported only when the CLI is
built, so adding a command is one line in ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

COMMAND_MODULES = [
    "clad_lite.info",
    "clad_lite.tour",
    "clad_lite.params",
    "clad_lite.encoders.decision_nce",
    "clad_lite.encoders.cache",
    "clad_lite.demos.generate",
    "clad_lite.demos.info",
    "clad_lite.demos.filmstrip",
    "clad_lite.train",
    "clad_lite.expert.evaluate",
    "clad_lite.evaluate",
    "clad_lite.bench",
    "clad_lite.compare",
    "clad_lite.position_probe",
    "clad_lite.analysis",
    "clad_lite.pipeline",
]


class UserError(Exception):
    """An error caused by the user's input (bad file, key, profile); printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clad_lite", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
