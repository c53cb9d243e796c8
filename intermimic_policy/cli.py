"""``intermimic``: one console script, one subcommand per concern.

Each concern registers its own subcommands (a module with ``register(subparsers)``), so this
file only lists them. Errors derived from ``IntermimicError`` (and OS errors on user files) end
as one line on stderr with exit status 2, never as a traceback.

These are the library's commands. The installed ``intermimic`` script is ``training.cli:main``,
which adds the training commands (``export``) and loaders to these: the library never names
``training``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from intermimic_policy.errors import IntermimicError
from intermimic_policy.interrupt import call, exit_process

COMMAND_MODULES: tuple[str, ...] = (
    "intermimic_policy.sim.replay_cli",
    "intermimic_policy.motion.commands",
    "intermimic_policy.embodiment.commands",
    "intermimic_policy.runtime.commands",
    "intermimic_policy.sim.env_cli",
    "intermimic_policy.ros.launch_cli",
    "intermimic_policy.stream.commands",
    "intermimic_policy.retarget.commands",
)


# what only the full install has (``pip install .[deploy]`` leaves them out): commands that need
# them are not offered there, the others (``policy info``) are
FULL_INSTALL_ONLY = frozenset({"torch", "mujoco", "trimesh", "scipy", "coacd", "matplotlib", "rsl_rl", "tqdm",
                               "rich", "imageio", "smplx", "pinocchio"})


def build_parser(command_modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intermimic", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in command_modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] in FULL_INSTALL_ONLY:
                continue  # a deployment install: this command needs the full one
            raise
        module.register(sub)
    return parser


def _run(argv: Sequence[str] | None, command_modules: Sequence[str]) -> int:
    parser = build_parser(command_modules)
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
    except OSError as exc:
        print(f"intermimic: error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None, command_modules: Sequence[str] = COMMAND_MODULES) -> int:
    """Ctrl-C anywhere (imports of the subcommands included) ends with one line and status 130."""
    return call("intermimic", lambda: _run(argv, command_modules))


if __name__ == "__main__":
    exit_process(main())
