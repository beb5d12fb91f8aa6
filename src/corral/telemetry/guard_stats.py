"""What the guards did, counted: blocks, flags, redactions, and the errors that made them
fail closed (`corral_guard_errors_total`). Plain counters the gates bump in O(1); the
gateway's /metrics reads them as Prometheus counters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class GuardStats(Collector):
    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (guard, outcome)
        self.errors: Counter[str] = Counter()  # by guard

    def count(self, guard: str, outcome: str) -> None:
        self.outcomes[(guard, outcome)] += 1

    def error(self, guard: str) -> None:
        """A detector raised or ran out of time, so the call was blocked (fail closed)."""
        self.errors[guard] += 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        outcomes = CounterMetricFamily(
            "corral_guard_outcomes",
            "Texts the guards blocked, flagged or redacted, by guard and outcome.",
            labels=("guard", "outcome"),
        )
        for (guard, outcome), value in sorted(self.outcomes.items()):
            outcomes.add_metric((guard, outcome), value)
        yield outcomes
        errors = CounterMetricFamily(
            "corral_guard_errors",
            "Guards that failed (raised or ran out of time) and so blocked the call.",
            labels=("guard",),
        )
        for guard, value in sorted(self.errors.items()):
            errors.add_metric((guard,), value)
        yield errors
