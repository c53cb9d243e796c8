"""``intermimic stream --generator MODULE:FUNCTION``: run a user's generator as a window publisher."""

from __future__ import annotations

import argparse

from intermimic_policy.stream.runner import (
    add_run_arguments,
    install_stop_on_signals,
    load_generator,
    run_from_args,
)


def _stream(args: argparse.Namespace) -> int:
    generate = load_generator(args.generator)
    stats = run_from_args(generate, args, install_stop_on_signals())
    print(f"stream: {stats['published']} windows published ({stats['generated']} generated, "
          f"{stats['dropped']} dropped)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("stream", help="run a motion generator function, publishing its windows")
    p.add_argument("--generator", required=True,
                   help="MODULE:FUNCTION, FUNCTION(time_s) -> stream.GeneratedWindow | None")
    add_run_arguments(p)
    p.set_defaults(func=_stream)
