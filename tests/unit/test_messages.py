"""Message ids (router/messages.py)."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from smsrouter.router import messages
from smsrouter.router.messages import new_message_id


def test_ids_are_uuid7_time_ordered_and_unique_across_random_blocks() -> None:
    count = 3 * messages._RANDOM_BLOCK // 10 + 7  # past more than one block of random bits
    before_ms = time.time_ns() // 1_000_000
    ids = [new_message_id() for _ in range(count)]
    after_ms = time.time_ns() // 1_000_000
    assert len(set(ids)) == count
    assert {i.version for i in ids} == {7}
    assert {i.variant for i in ids} == {uuid.RFC_4122}
    stamps = [i.int >> 80 for i in ids]
    assert stamps == sorted(stamps)
    assert before_ms <= stamps[0] and stamps[-1] <= after_ms


def test_a_forked_child_does_not_repeat_its_parents_next_ids() -> None:
    new_message_id()  # the parent holds a block of random bits now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out
        try:
            os.write(write, b"".join(new_message_id().bytes for _ in range(5)))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    child = {uuid.UUID(bytes=data[i : i + 16]) for i in range(0, len(data), 16)}
    parent = {new_message_id() for _ in range(5)}
    assert len(child) == 5
    assert not child & parent
    # Time bits may match (same millisecond): the random bits must not.
    assert not {i.int & (1 << 74) - 1 for i in child} & {i.int & (1 << 74) - 1 for i in parent}


def test_an_id_is_a_uuid_as_the_standard_library_reads_it() -> None:
    made = new_message_id()
    same = uuid.UUID(str(made))
    assert isinstance(made, uuid.UUID)
    assert made == same and same == made and hash(made) == hash(same)
    assert str(made) == str(same) and made.bytes == same.bytes and made.hex == same.hex
    assert {same: "found"}[made] == "found"


def test_a_status_is_found_by_its_value_and_only_by_it() -> None:
    for status in messages.Status:
        assert messages.STATUS_OF[status.value] is status
        assert messages.STATUS_OF[status] is status
    assert len(messages.STATUS_OF) == len(messages.Status)
    with pytest.raises(KeyError):
        messages.STATUS_OF["DELIVERED"]
