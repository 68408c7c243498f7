"""RFC 6455 frames as /inbox/ws needs them: client frames read, server frames written.

No extension is ever negotiated (no compression), so a reserved bit set is a
protocol error; client frames must be masked, server frames never are. Sizes
are checked from a frame's header, before its payload is buffered.
"""

from __future__ import annotations

import struct

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
_DATA = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
_CONTROL = (OP_CLOSE, OP_PING, OP_PONG)
#: Close codes a peer may send (RFC 6455 section 7.4, and the IANA registry's 1012-1014).
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})

try:  # websockets' C unmasking, when its extension is built (uvicorn[standard] brings it)
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - a pure-Python websockets
    _apply_mask = None  # type: ignore[assignment]


def unmask(data: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    if _apply_mask is not None:
        return bytes(_apply_mask(data, mask))
    size = len(data)
    key = int.from_bytes((bytes(mask) * (size // 4 + 1))[:size], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(size, "big")


class ProtocolError(Exception):
    """The client broke the framing rules: the socket closes with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented server frame."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(OP_CLOSE, code.to_bytes(2, "big") + reason.encode()[:123])


def close_code(payload: bytes) -> tuple[int, str]:
    """The code and reason of a client's close frame (1005: it gave none)."""
    if not payload:
        return 1005, ""
    code = int.from_bytes(payload[:2], "big")
    if len(payload) == 1 or not (code in _SENDABLE or 3000 <= code <= 4999):
        raise ProtocolError(1002, "invalid close code")
    try:
        return code, payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolError(1007, "close reason is not UTF-8") from None


class FrameReader:
    """Cuts client frames out of the bytes received, and joins fragments into messages.

    `feed` hands it bytes; `next` returns one complete message or control frame at
    a time as (opcode, payload), None when it needs more bytes. A message (all its
    fragments together) larger than `max_size` raises ProtocolError 1009 as soon as
    a header says so.
    """

    __slots__ = ("_buffer", "_fragments", "_kind", "_pos", "_size", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer: bytes | bytearray = b""
        self._pos = 0
        self._kind = -1  # the opcode of the message being fragmented, if any
        self._fragments: list[bytes] = []
        self._size = 0  # its bytes so far (what a next fragment's size is added to)

    def feed(self, data: bytes) -> None:
        if self._pos >= len(self._buffer):
            self._buffer, self._pos = data, 0  # the usual case: nothing left over, no copy
            return
        buffer = self._buffer
        if isinstance(buffer, bytes):
            buffer = bytearray(memoryview(buffer)[self._pos :])
            self._pos = 0
        buffer += data
        self._buffer = buffer

    def next(self) -> tuple[int, bytes] | None:
        while True:
            frame = self._frame()
            if frame is None:
                self._compact()
                return None
            fin, opcode, payload = frame
            if opcode >= OP_CLOSE:
                return opcode, payload
            if opcode == OP_CONTINUATION:
                if self._kind < 0:
                    raise ProtocolError(1002, "continuation frame without a message")
            elif self._kind >= 0:
                raise ProtocolError(1002, "new message before the last one ended")
            elif fin:
                return opcode, payload
            else:
                self._kind = opcode
            self._fragments.append(payload)
            self._size += len(payload)
            if fin:
                kind, fragments = self._kind, self._fragments
                self._kind, self._fragments, self._size = -1, [], 0
                return kind, b"".join(fragments)

    def _frame(self) -> tuple[int, int, bytes] | None:
        buffer, pos = self._buffer, self._pos
        available = len(buffer) - pos
        if available < 2:
            return None
        first, second = buffer[pos], buffer[pos + 1]
        if first & 0x70:
            raise ProtocolError(1002, "reserved bits set")
        if not second & 0x80:
            raise ProtocolError(1002, "client frames must be masked")
        fin, opcode, size = first & 0x80, first & 0x0F, second & 0x7F
        head = 6
        if size == 126:
            if available < 4:
                return None
            size, head = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 8
        elif size == 127:
            if available < 10:
                return None
            size, head = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 14
        if opcode in _CONTROL:
            if size > 125 or not fin:
                raise ProtocolError(1002, "control frames are short and whole")
        elif opcode not in _DATA:
            raise ProtocolError(1002, "unknown opcode")
        elif self._size + size > self.max_size:
            raise ProtocolError(1009, "message too big")
        end = pos + head + size
        if len(buffer) < end:
            return None
        start = pos + head
        payload = unmask(buffer[start:end], buffer[start - 4 : start]) if size else b""
        self._pos = end
        return fin, opcode, payload

    def _compact(self) -> None:
        buffer, pos = self._buffer, self._pos
        if pos >= len(buffer):
            self._buffer, self._pos = b"", 0
        elif pos and isinstance(buffer, bytearray):
            del buffer[:pos]
            self._pos = 0
