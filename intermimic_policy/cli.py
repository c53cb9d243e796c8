"""``intermimic``: one console script, one subcommand per concern.

Each concern registers its own subcommands (a module with ``register(subparsers)``), so this
file only lists them. Errors derived from ``IntermimicError`` (and OS errors on user files) end
as one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from intermimic_policy.errors import IntermimicError

COMMAND_MODULES: tuple[str, ...] = (
    "intermimic_policy.sim.replay_cli",
    "intermimic_policy.motion.commands",
    "intermimic_policy.embodiment.commands",
    "intermimic_policy.runtime.commands",
    "training.export_cli",
    "intermimic_policy.sim.env_cli",
    "intermimic_policy.ros.launch_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intermimic", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "no_progress", False) or getattr(args, "quiet", False) or not sys.stderr.isatty():
        # every progress bar of this process off (tqdm reads TQDM_DISABLE for each new bar):
        # --no-progress means all of them, and a redirected log gets lines, not bar updates
        os.environ["TQDM_DISABLE"] = "1"
    try:
        return int(args.func(args) or 0)
    except IntermimicError as exc:
        print(f"intermimic: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, KeyboardInterrupt) as exc:
        msg = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        print(f"intermimic: error: {msg}", file=sys.stderr)
        return 2 if not isinstance(exc, KeyboardInterrupt) else 130


if __name__ == "__main__":
    sys.exit(main())
