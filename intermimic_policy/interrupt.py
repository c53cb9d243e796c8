"""Ctrl-C ends a command with one line on stderr and exit status 130 (128 + SIGINT), wherever it
lands: while the heavy imports load, while parsing, or deep inside a run. ``finally`` blocks still
run (atomic writers remove their temporary files) because the interrupt is an exception until here.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence

EXIT_INTERRUPTED = 130


def interrupted(prog: str) -> int:
    """Print the one line and return the status (a second Ctrl-C meanwhile changes nothing)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed (a pipe whose reader quit)
        pass
    return EXIT_INTERRUPTED


def call(prog: str, main: Callable[[], int | None]) -> int:
    """``main()``'s status, or 130 with one line on Ctrl-C.

    A Ctrl-C that lands while a C extension initialises (MuJoCo's ``_specs``) surfaces as that
    import's ``ImportError: initialization failed``, not as ``KeyboardInterrupt``: the handler
    notes every SIGINT, so any error after one still ends as an interrupt."""
    seen: list[int] = []

    def on_sigint(signum: int, frame: object) -> None:
        # further Ctrl-Cs are ignored from here on: one interrupt, one unwinding (a second
        # KeyboardInterrupt inside a ``finally`` or at shutdown would end with a traceback)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        seen.append(signum)
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: keep the default handler
        previous = None
    try:
        return int(main() or 0)
    except KeyboardInterrupt:
        return interrupted(prog)
    except BaseException:
        if seen:
            return interrupted(prog)
        raise
    finally:
        if previous is not None and signal.getsignal(signal.SIGINT) is on_sigint:
            signal.signal(signal.SIGINT, previous)


def run_module_main(module: str, prog: str, argv: Sequence[str] | None = None) -> None:
    """Import ``module`` and exit with its ``main(argv)``; Ctrl-C during the import counts too.

    For scripts whose imports take seconds: their ``__main__`` calls this first thing, so nothing
    heavy is imported outside the guard."""
    def run() -> int | None:
        return importlib.import_module(module).main(argv)  # type: ignore[no-any-return]

    exit_process(call(prog, run))


def exit_process(code: int) -> None:
    """End the process with ``code``; after an interrupt (130) at once, output flushed.

    Why not ``sys.exit(130)`` there: CPython ends a process by SIGINT (status -2) instead of the
    requested code once any KeyboardInterrupt went unhandled through a C-level ``PyRun_*`` (an
    extension initialising under the Ctrl-C), and a teardown of half-imported extensions can
    fail too. The run's own ``finally`` blocks have all run when ``call`` returns."""
    if code != EXIT_INTERRUPTED:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed, or no stream at all
            pass
    os._exit(code)


def ignore_sigint() -> None:
    """Process-pool initializer: workers leave Ctrl-C to the parent, which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
