"""The gateway's HTTP protocol (services/gateway/server.py): a response head is held until its
body joins it, so an answer leaves in one write, with the same bytes in the same order."""

from __future__ import annotations

import asyncio
from typing import Any

from services.gateway.server import CoalescingTransport

HEAD = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


class Socket:
    """What the protocol's transport would send, one entry per write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "a write after the close"
        self.writes.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1234) if name == "peername" else None


def run(scenario: Any) -> Socket:
    socket = Socket()

    async def main() -> None:
        transport = CoalescingTransport(socket, asyncio.get_running_loop())  # type: ignore[arg-type]
        await scenario(transport, socket)

    asyncio.run(main())
    return socket


def test_a_head_and_its_body_in_one_turn_leave_in_one_write() -> None:
    async def scenario(transport: CoalescingTransport, socket: Socket) -> None:
        transport.write(HEAD)
        assert socket.writes == []
        transport.write(b"{}")
        assert socket.writes == [HEAD + b"{}"]
        await asyncio.sleep(0)  # the scheduled flush finds nothing held
        transport.write(HEAD)
        transport.write(b"[]")

    assert run(scenario).writes == [HEAD + b"{}", HEAD + b"[]"]


def test_a_head_alone_leaves_on_the_loops_next_turn_and_before_what_follows() -> None:
    async def scenario(transport: CoalescingTransport, socket: Socket) -> None:
        transport.write(HEAD)
        await asyncio.sleep(0)
        assert socket.writes == [HEAD]
        transport.write(b"chunk")
        transport.write(HEAD)
        transport.writelines([b"a", b"b"])

    assert run(scenario).writes == [HEAD, b"chunk", HEAD, b"ab"]


def test_a_close_writes_a_held_head_first_and_nothing_is_written_after() -> None:
    async def scenario(transport: CoalescingTransport, socket: Socket) -> None:
        transport.write(HEAD)
        transport.close()
        assert socket.writes == [HEAD] and socket.closed
        await asyncio.sleep(0)

    assert run(scenario).writes == [HEAD]


def test_bodies_and_other_bytes_pass_straight_through() -> None:
    async def scenario(transport: CoalescingTransport, socket: Socket) -> None:
        transport.write(b"HTTP/1.1 but not a head")
        transport.write(b"0\r\n\r\n")  # a chunked body's end: not a head
        assert socket.writes == [b"HTTP/1.1 but not a head", b"0\r\n\r\n"]
        assert transport.get_extra_info("peername") == ("127.0.0.1", 1234)
        assert not transport.is_closing()

    run(scenario)
