"""The one process ``main`` of every node: arguments, logging, signals, errors, exit codes.

Why one: three drifted copies had different signal handling (one ignored Ctrl-C). Here SIGINT and
SIGTERM both set a stop flag that the node's loop polls (its waits are short, so it stops within
a second); a second signal while stopping raises ``KeyboardInterrupt`` to end a stuck shutdown.
A configuration or file error is one line naming the problem and exit 2; a stop by signal is a
normal end (exit 0) after the node's own cleanup (status, summary, record).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

from intermimic_policy.errors import IntermimicError
from intermimic_policy.ros.node_params import split_ros_args

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class StopFlag:
    """Set by SIGINT/SIGTERM; ``bool(flag)`` says whether the node should stop."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.at: float | None = None  # monotonic time of the signal

    def __bool__(self) -> bool:
        return self.signal is not None

    def __call__(self) -> bool:
        return self.signal is not None

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal is not None:  # a second signal: the clean stop is stuck, end it now
            raise KeyboardInterrupt
        self.signal = signum
        self.at = time.monotonic()


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--domain-id``, ``--transport`` and ``--log-level``, named alike in every node."""
    p.add_argument("--config", help="YAML with common and node sections (e.g. config/sim_hoi.yaml)")
    p.add_argument("--domain-id", type=int, default=None, help="DDS domain (default: config or $ROS_DOMAIN_ID)")
    p.add_argument("--transport", choices=("auto", "cyclone", "rclpy"), default=None)
    p.add_argument("--log-level", default="INFO")


def run_main(name: str, parser: argparse.ArgumentParser,
             run: Callable[[argparse.Namespace, str | None, StopFlag], None],
             argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (``--ros-args --params-file F`` too), set up logging and signals, call
    ``run(args, params_file, stop)`` and turn its errors into exit codes."""
    ours, params_file = split_ros_args(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(ours)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format=f"[%(levelname)s] {name}: %(message)s")
    stop = StopFlag()
    previous = {s: signal.signal(s, stop.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    log = logging.getLogger(f"intermimic.ros.{name}")
    try:
        run(args, params_file, stop)
    except IntermimicError as exc:
        print(f"{name}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if stop.signal is not None:
        log.info("stopped by %s in %.2f s", signal.Signals(stop.signal).name, time.monotonic() - (stop.at or 0.0))
    return EXIT_OK


def exit_process(code: int) -> None:
    """End a node process at once after its own cleanup (``run_main`` returned): flush the output
    and skip the interpreter's teardown (unloading torch, MuJoCo and the DDS library takes a
    second or more on a loaded machine, past the 1 s a stopped node may take)."""
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
