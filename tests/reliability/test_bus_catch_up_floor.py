"""Where a session catches up from after a bus gap: seqs from two processes do not reach a
session in seq order (one process's publish may still be on its way through Redis, retried on
a new connection or after a failover, when the other process sends a later seq itself), so
the catch-up starts below every seq sent within the settle time, never at the highest one."""

from __future__ import annotations

from backend.realtime.delivery import DeliveryControl


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_catch_up_after_a_gap_starts_below_an_earlier_seq_still_on_its_way() -> None:
    clock = Clock()
    control = DeliveryControl(rate=1000, burst=1000, clock=clock)
    control.settle_seconds = 6.0
    control.note_sent("s", 100)  # the baseline at connect
    clock.now += 10
    for seq in (101, 102, 103, 104, 105, 106):
        control.note_sent("s", seq)
        clock.now += 2
    control.note_sent("s", 108)  # sent here while 107, from another process, is in flight
    # 107 is lost on the bus; the other process announces the gap
    after, skip = control.close_gap("s")
    assert after is not None and after < 107
    assert 108 in skip and 107 not in skip
    # with the gap open first (this process's own listener failed), the same
    control.open_gap()
    after, skip = control.close_gap("s")
    assert after is not None and after < 107
    assert 108 in skip and 107 not in skip
    control.end_gap()


def test_a_quiet_session_catches_up_from_its_highest_seq_once_settled() -> None:
    clock = Clock()
    control = DeliveryControl(rate=1000, burst=1000, clock=clock)
    control.settle_seconds = 6.0
    control.note_sent("s", 5)
    control.note_sent("s", 7)
    clock.now += 7
    assert control.close_gap("s") == (7, set())
    control.forget("s")
    assert control.close_gap("s") == (None, set())


def test_a_live_copy_of_a_notification_the_session_was_just_sent_is_dropped() -> None:
    clock = Clock()
    control = DeliveryControl(rate=1000, burst=1000, clock=clock)
    control.settle_seconds = 6.0
    control.note_sent("s", 7)  # from a catch-up, before the late live copy arrives
    assert control.already_sent("s", 7)
    assert not control.already_sent("s", 8)
    clock.now += 7
    control.note_sent("s", 8)  # settles 7: its copy is no longer looked for
    assert not control.already_sent("s", 7)
    assert control.already_sent("s", 8)
