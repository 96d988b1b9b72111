"""The per-PnasEval loop's bookkeeping: liveness (a loop that stops turning is found) and the Event
rate limit. The loop itself runs against the emulator in test_operator_faults.py."""

from __future__ import annotations

import time

from pnas_operator.daemon import EventGate, Runs


def test_a_running_pnaseval_whose_loop_stops_turning_fails_liveness():
    runs, missed = Runs(), {}
    known = {("ml", "a"): "Inferring", ("ml", "b"): "Succeeded", ("ml", "c"): "Converting"}
    runs.beats[("ml", "a")] = time.monotonic()
    assert runs.stalled(known, 60, missed) == []  # c has no loop yet: counted from now
    runs.beats[("ml", "a")] = time.monotonic() - 120  # a's loop last turned 2 minutes ago
    missed[("ml", "c")] = time.monotonic() - 300  # and c has had none for 5 minutes (kopf stopped it)
    found = runs.stalled(known, 60, missed)
    assert [f.split(":")[0] for f in found] == ["ml/a", "ml/c"]  # a finished one (b) never counts
    del known[("ml", "c")]  # deleted: forgotten
    runs.stalled(known, 60, missed)
    assert ("ml", "c") not in missed


def test_the_same_event_is_posted_at_most_once_per_interval():
    posted = []
    gate = EventGate(lambda *event: posted.append(event), interval=60)
    gate("Warning", "ApiError", "creating Job x: HTTP 500")
    gate("Warning", "ApiError", "creating Job x: HTTP 500")
    gate("Warning", "QuotaExceeded", "exceeded quota")
    assert [e[1] for e in posted] == ["ApiError", "QuotaExceeded"]
    gate.last[("ApiError", "creating Job x: HTTP 500")] -= 61
    gate("Warning", "ApiError", "creating Job x: HTTP 500")
    assert len(posted) == 3


def test_an_event_that_cannot_be_posted_does_not_stop_the_loop():
    def broken(*_):
        raise RuntimeError("the API server is down")

    EventGate(broken, interval=0)("Warning", "ApiError", "x")  # logged, not raised
