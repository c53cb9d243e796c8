"""Shared bounds of the fuzzing suite (``tests/test_fuzz_*.py``).

CI runs a fixed, derandomized set of cases per target so the suite stays fast and never flaky;
``INTERMIMIC_FUZZ_EXAMPLES=N`` runs N random cases per target instead (a longer local hunt).
No example database is written.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

_DEEP = int(os.environ.get("INTERMIMIC_FUZZ_EXAMPLES", "0"))


def fuzz_settings(examples: int, deadline_s: float = 5.0) -> settings:
    """``examples`` cases in CI; each must finish within ``deadline_s`` (a hang is a finding)."""
    return settings(max_examples=_DEEP or examples, deadline=timedelta(seconds=deadline_s),
                    derandomize=not _DEEP, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


class Tally:
    """Counts the cases a target ran and how each ended (printed with ``pytest -s``)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.outcomes: dict[str, int] = {}

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def report(self) -> str:
        total = sum(self.outcomes.values())
        line = f"fuzz {self.target}: {total} cases " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        print(line)
        return line
