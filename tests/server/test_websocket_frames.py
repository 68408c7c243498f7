"""websocket_frames: client frames cut from any split of the bytes, fragments joined, limits from headers."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inbox_asgi.server import websocket_frames
from inbox_asgi.server.websocket_frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    FrameReader,
    ProtocolError,
    close_code,
    frame,
    unmask,
)


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, key: bytes = b"\x01\x02\x03\x04") -> bytes:
    size = len(payload)
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        head = bytes((first, 0x80 | size))
    elif size < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_all(reader: FrameReader, data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    got = []
    last = 0
    for cut in [*sorted(cuts), len(data)]:
        reader.feed(data[last:cut])
        last = cut
        while (item := reader.next()) is not None:
            got.append(item)
    return got


messages = st.lists(
    st.tuples(st.sampled_from([OP_TEXT, OP_BINARY]), st.binary(max_size=300), st.integers(1, 3)), max_size=6
)


@given(messages, st.lists(st.integers(0, 2000), max_size=12), st.booleans())
def test_any_split_of_fragmented_messages_and_pings_reads_back_the_same(
    sent: list[tuple[int, bytes, int]], cuts: list[int], ping_between: bool
) -> None:
    stream, expected = b"", []
    for opcode, payload, pieces in sent:
        step = max(1, len(payload) // pieces)
        parts = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
        for index, part in enumerate(parts):
            kind = opcode if index == 0 else OP_CONTINUATION
            stream += client_frame(kind, part, fin=index == len(parts) - 1)
            if ping_between and index == 0 and len(parts) > 1:
                stream += client_frame(OP_PING, b"p")
                expected.append((OP_PING, b"p"))
        expected.append((opcode, payload))
    cuts = [cut for cut in cuts if cut <= len(stream)]
    assert read_all(FrameReader(10_000), stream, cuts) == expected


def test_extended_lengths_and_a_message_too_big_refused_from_its_header() -> None:
    reader = FrameReader(70_000)
    big = os.urandom(66_000)
    assert read_all(reader, client_frame(OP_BINARY, b"x" * 200) + client_frame(OP_BINARY, big), []) == [
        (OP_BINARY, b"x" * 200),
        (OP_BINARY, big),
    ]
    reader = FrameReader(1000)
    reader.feed(client_frame(OP_TEXT, b"a" * 1001)[:8])  # the header alone
    with pytest.raises(ProtocolError) as refused:
        reader.next()
    assert refused.value.code == 1009
    reader = FrameReader(1000)
    reader.feed(client_frame(OP_TEXT, b"a" * 600, fin=False) + client_frame(OP_CONTINUATION, b"a" * 401)[:4])
    with pytest.raises(ProtocolError) as refused:
        reader.next()
    assert refused.value.code == 1009


@pytest.mark.parametrize(
    "data",
    [
        bytes((0x81, 0x01)) + b"a",  # not masked
        client_frame(OP_TEXT, b"a")[:1].replace(b"\x81", b"\xc1") + client_frame(OP_TEXT, b"a")[1:],  # RSV1
        client_frame(3, b"a"),  # unknown opcode
        client_frame(OP_PING, b"a" * 126),  # control frame too long
        client_frame(OP_PING, b"a", fin=False),  # fragmented control frame
        client_frame(OP_CONTINUATION, b"a"),  # nothing to continue
        client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"),  # a new message inside one
    ],
)
def test_framing_errors_are_1002(data: bytes) -> None:
    reader = FrameReader(1000)
    reader.feed(data)
    with pytest.raises(ProtocolError) as refused:
        while reader.next() is not None:
            pass
    assert refused.value.code == 1002


def test_close_codes() -> None:
    assert close_code(b"") == (1005, "")
    assert close_code(b"\x03\xe8bye") == (1000, "bye")
    assert close_code((4001).to_bytes(2, "big")) == (4001, "")
    for bad in (b"\x03", (1005).to_bytes(2, "big"), (999).to_bytes(2, "big"), (2000).to_bytes(2, "big")):
        with pytest.raises(ProtocolError):
            close_code(bad)
    with pytest.raises(ProtocolError) as refused:
        close_code(b"\x03\xe8\xff")
    assert refused.value.code == 1007


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_server_frames_use_the_shortest_length(size: int) -> None:
    data = frame(OP_CLOSE if size <= 125 else OP_BINARY, b"z" * size)
    expected_head = 2 if size < 126 else 4 if size < 65536 else 10
    assert len(data) == expected_head + size and data[0] & 0x80


def test_the_pure_python_unmask_matches_the_c_one(monkeypatch: pytest.MonkeyPatch) -> None:
    data, key = os.urandom(1001), os.urandom(4)
    fast = unmask(data, key)
    monkeypatch.setattr(websocket_frames, "_apply_mask", None)
    assert unmask(data, key) == fast == bytes(b ^ key[i % 4] for i, b in enumerate(data))
