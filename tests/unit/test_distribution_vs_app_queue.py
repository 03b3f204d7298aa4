"""The measurement behind "distribution in the controller, not app_queue" (docs/decisions.md).

The same simulated floor (five operators, one of whom never answers, 30 calls, 20 seeds) is
served once by app_queue's rankings as documented and reported by its users — ``leastrecent``
orders by the end of the member's last *answered* call, ``fewestcalls`` by *answered* calls — and
once by ours. The figure is how many calls rang the silent operator first;
``python -m tests.unit.test_distribution_vs_app_queue`` prints the table in docs/benchmarks.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from routing.distribution import OperatorView, choose_operator
from tests.unit.test_distribution import RATES, T0, Floor


def app_queue_leastrecent(views: list[OperatorView], now: datetime, exclude) -> OperatorView | None:
    free = [v for v in views if v.eligible(now) and v.extension not in exclude]
    return min(free, key=lambda v: (v.last_call_end_at or datetime.min.replace(tzinfo=T0.tzinfo), v.extension),
               default=None)


def app_queue_fewestcalls(views: list[OperatorView], now: datetime, exclude) -> OperatorView | None:
    free = [v for v in views if v.eligible(now) and v.extension not in exclude]
    return min(free, key=lambda v: (v.calls_today, v.extension), default=None)


def ours(strategy: str):
    return lambda views, now, exclude: choose_operator(views, strategy, now, exclude=exclude)


class ComparedFloor(Floor):
    def __init__(self, pick, seed: int):
        super().__init__(RATES, seed)
        self._pick = pick

    def pick(self, now: datetime, strategy: str, tried: list[str]) -> OperatorView | None:
        return self._pick(self.live(now), now, tried)


def silent_first_share(pick, seeds=range(20), calls: int = 30) -> float:
    """Share of calls (over all seeds) that rang the never-answering operator 101 first."""
    firsts = total = 0
    for seed in seeds:
        floor = ComparedFloor(pick, seed)
        now = T0
        for n in range(calls):
            now += timedelta(seconds=floor.rng.randint(20, 90))
            floor.call(n, now, "")
            rung = [e for (k, e, _) in floor.rings if k == n]
            total += 1
            firsts += bool(rung) and rung[0] == "101"
    return firsts / total


def comparison() -> dict[str, float]:
    return {
        "app_queue leastrecent": silent_first_share(app_queue_leastrecent),
        "app_queue fewestcalls": silent_first_share(app_queue_fewestcalls),
        "ours longest_idle": silent_first_share(ours("longest_idle")),
        "ours fewest_calls": silent_first_share(ours("fewest_calls")),
        "ours least_talk_time": silent_first_share(ours("least_talk_time")),
    }


def test_app_queue_rankings_keep_ringing_the_silent_operator_first_ours_do_not():
    shares = comparison()
    fair = 1 / len(RATES)
    # The anchors' complaints, reproduced: the silent operator is first for most calls.
    assert shares["app_queue leastrecent"] > 0.6, shares
    assert shares["app_queue fewestcalls"] > 0.6, shares
    # Ours give him about his fair share of first rings (1 in 5), never most of them.
    for name in ("ours longest_idle", "ours fewest_calls", "ours least_talk_time"):
        assert shares[name] <= fair + 0.1, shares


if __name__ == "__main__":  # pragma: no cover - used by docs/benchmarks.md
    for name, share in comparison().items():
        print(f"| {name} | {share:.0%} |")

