"""Reassembly of concatenated parts: order, interleaving, timeouts, bounds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smsrouter.sms.concat import Reassembler


def test_parts_in_any_order_make_one_message() -> None:
    r = Reassembler()
    assert r.add(("a", "b"), 7, 3, 2, b"two ", now=0) == []
    assert r.add(("a", "b"), 7, 3, 3, b"three", now=1) == []
    (done,) = r.add(("a", "b"), 7, 3, 1, b"one ", now=2)
    assert done.complete and done.payload() == b"one two three"
    assert len(r) == 0


def test_messages_from_different_senders_or_refs_do_not_mix() -> None:
    r = Reassembler()
    r.add(("a", "x"), 1, 2, 1, b"a1", now=0)
    r.add(("b", "x"), 1, 2, 1, b"b1", now=0)
    r.add(("a", "x"), 2, 2, 1, b"A1", now=0)
    (b,) = r.add(("b", "x"), 1, 2, 2, b"b2", now=0)
    assert b.payload() == b"b1b2"
    (a,) = r.add(("a", "x"), 1, 2, 2, b"a2", now=0)
    assert a.payload() == b"a1a2"
    assert len(r) == 1


def test_incomplete_messages_are_given_up_after_the_timeout() -> None:
    r = Reassembler(timeout=60)
    r.add(("a", "b"), 1, 3, 1, b"first", now=0)
    r.add(("c", "d"), 1, 2, 1, b"other", now=30)
    assert r.next_expiry() == 60
    assert r.expire(59.9) == []
    (gone,) = r.expire(60)
    assert not gone.complete and gone.payload() == b"first" and gone.total == 3
    assert len(r) == 1


def test_buffer_is_bounded_oldest_given_up_first() -> None:
    r = Reassembler(max_pending=2)
    r.add(("a",), 1, 2, 1, b"a", now=0)
    r.add(("b",), 1, 2, 1, b"b", now=1)
    out = r.add(("c",), 1, 2, 1, b"c", now=2)
    assert [(o.key[0], o.complete) for o in out] == [("a", False)]
    assert len(r) == 2


def test_bad_sequence_numbers_come_back_as_they_are() -> None:
    r = Reassembler()
    (alone,) = r.add(("a",), 1, 2, 3, b"odd", now=0)
    assert alone.complete and alone.payload() == b"odd"
    assert len(r) == 0


@given(st.lists(st.binary(min_size=1, max_size=5), min_size=1, max_size=8), st.randoms())
def test_any_order_reassembles(chunks: list[bytes], rnd) -> None:  # type: ignore[no-untyped-def]
    r = Reassembler()
    order = list(range(len(chunks)))
    rnd.shuffle(order)
    done = []
    for i in order:
        done += r.add(("s", "d"), 9, len(chunks), i + 1, chunks[i], now=0)
    assert len(done) == 1 and done[0].complete
    assert done[0].payload() == b"".join(chunks)
