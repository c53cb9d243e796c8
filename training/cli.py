"""``intermimic``: the library's commands plus training's (the installed console script).

The composition root: the library (``intermimic_policy``) never imports ``training``; this module
adds training's subcommands (``export``) and its ``eval --policy CHECKPOINT.pt`` loader to the
library's CLI. Nothing heavy is imported here, so ``intermimic policy info`` stays torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from intermimic_policy import cli as library_cli
from intermimic_policy.sim.policy_loaders import register_policy_loader

COMMAND_MODULES: tuple[str, ...] = (*library_cli.COMMAND_MODULES, "training.export_cli")
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def checkpoint_loader(arg: str) -> Any:
    """``eval`` loader for training checkpoints (imports torch and the trainer only when used)."""
    if not arg.lower().endswith(CHECKPOINT_SUFFIXES):
        return None
    from training.eval_policy import load_checkpoint_policy

    return load_checkpoint_policy(arg)


def register_loaders() -> None:
    register_policy_loader("checkpoint", checkpoint_loader)


def main(argv: Sequence[str] | None = None) -> int:
    register_loaders()
    return library_cli.main(argv, COMMAND_MODULES)


if __name__ == "__main__":
    library_cli.exit_process(main())
