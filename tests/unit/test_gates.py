"""The per-destination cap lets keys through in turn and never strands the line."""

from __future__ import annotations

from patchbay.controller.gates import DestinationGates


def gates(limit: int = 1) -> tuple[DestinationGates[str], list[str]]:
    woken: list[str] = []
    return DestinationGates(limit, woken.append), woken


def test_keys_beyond_the_limit_wait_and_are_woken_in_turn_with_the_slot() -> None:
    subject, woken = gates()
    assert subject.enter("db:5432", "a")
    assert not subject.enter("db:5432", "b")
    assert not subject.enter("db:5432", "c")
    subject.leave("db:5432")
    assert woken == ["b"]
    assert not subject.enter("db:5432", "d")  # the freed slot is b's, not a newcomer's
    assert subject.enter("db:5432", "b")
    assert subject.in_flight("db:5432") == 1


def test_other_destinations_are_not_held_up() -> None:
    subject, _ = gates()
    assert subject.enter("blackhole:80", "a")
    assert not subject.enter("blackhole:80", "b")
    assert subject.enter("api:443", "c")


def test_a_key_waiting_twice_is_in_line_once() -> None:
    subject, woken = gates()
    subject.enter("db", "a")
    subject.enter("db", "b")
    subject.enter("db", "b")
    subject.leave("db")
    subject.release_unused("b")  # b came back with nothing to verify
    assert woken == ["b"]
    assert subject.in_flight("db") == 0


def test_a_slot_handed_to_a_key_that_no_longer_needs_it_goes_to_the_next() -> None:
    subject, woken = gates()
    subject.enter("db", "a")
    subject.enter("db", "b")
    subject.enter("db", "c")
    subject.leave("db")
    subject.release_unused("b")
    assert woken == ["b", "c"]
    assert subject.enter("db", "c")


def test_a_deleted_key_leaves_the_line_and_passes_on_its_slot() -> None:
    subject, woken = gates()
    subject.enter("db", "a")
    subject.enter("db", "b")
    subject.enter("db", "c")
    subject.forget("b")
    subject.leave("db")
    assert woken == ["c"]
