"""The hand-rolled HTTP/1.1 connection against a real local server that writes scripted bytes, in pieces."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from slipstream.loadtest import RequestMix, resolve_target
from slipstream.loadtest.wire import HttpConnection, open_connection

Action = bytes | float | None  # bytes: write them; float: sleep; None: close the connection

JSON_200 = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class ScriptedServer:
    """Answers the n-th request on any connection with ``scripts[n]``; counts connections."""

    def __init__(self, scripts: Sequence[Sequence[Action]]) -> None:
        self.scripts = list(scripts)
        self.served = 0
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                script = self.scripts[self.served]
                self.served += 1
                for action in script:
                    if action is None:
                        return
                    if isinstance(action, float):
                        await asyncio.sleep(action)
                    else:
                        writer.write(action)
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class Owner:
    """Collects what a connection reports."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[tuple[str, object, float]] = asyncio.Queue()

    def on_response(self, conn: HttpConnection, status: int, now: float) -> None:
        self.events.put_nowait(("response", status, now))

    def on_failure(self, conn: HttpConnection, kind: str, now: float) -> None:
        self.events.put_nowait(("failure", kind, now))

    def on_closed(self, conn: HttpConnection) -> None:
        self.events.put_nowait(("closed", None, 0.0))

    async def next(self) -> tuple[str, object, float]:
        return await asyncio.wait_for(self.events.get(), 5)


def bytewise(data: bytes) -> list[Action]:
    return [data[i : i + 1] for i in range(len(data))]


async def exchange(
    scripts: Sequence[Sequence[Action]],
) -> tuple[list[tuple[str, object]], HttpConnection, ScriptedServer]:
    """Send one request per script over one connection, until a failure or a close; what was reported."""
    owner = Owner()
    events: list[tuple[str, object]] = []
    async with ScriptedServer(scripts) as server:
        target = resolve_target(server.url)
        conn = await open_connection(target, owner)
        request = RequestMix(target).next()[0]
        try:
            for _ in scripts:
                conn.send(request, False, 0.0)
                kind, value, _ = await owner.next()
                events.append((kind, value))
                if kind != "response" or conn.closed:
                    break
        finally:
            conn.close()
            await asyncio.sleep(0)
    return events, conn, server


async def test_content_length_response_split_into_single_bytes() -> None:
    events, conn, _ = await exchange([bytewise(JSON_200)])
    assert events == [("response", 200)]
    assert not conn.busy


async def test_keep_alive_reuses_one_connection_for_several_requests() -> None:
    error = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}"
    events, _, server = await exchange([[JSON_200], [error], [JSON_200]])
    assert events == [("response", 200), ("response", 503), ("response", 200)]
    assert server.connections == 1


async def test_chunked_stream_records_the_first_chunk_time_as_ttft() -> None:
    first = chunk(b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n')
    rest = (
        chunk(b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n')
        + chunk(b"data: [DONE]\n\n")
        + b"0\r\n\r\n"
    )
    owner = Owner()
    async with ScriptedServer([[SSE_HEAD, *bytewise(first), 0.2, *bytewise(rest)]]) as server:
        target = resolve_target(server.url)
        conn = await open_connection(target, owner)
        conn.send(RequestMix(target).next()[0], True, 0.0)
        kind, status, done = await owner.next()
        conn.close()
        await asyncio.sleep(0)
    assert (kind, status) == ("response", 200)
    assert conn.first_byte > 0
    assert done - conn.first_byte >= 0.19  # the first chunk was seen before the server's pause


async def test_chunk_extensions_and_trailers_are_skipped() -> None:
    body = b"5;name=value\r\nhello\r\n0\r\nX-Trailer: yes\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    events, _, server = await exchange([bytewise(head + body), [JSON_200]])
    assert events == [("response", 200), ("response", 200)]
    assert server.connections == 1


async def test_interim_100_continue_is_skipped() -> None:
    events, _, _ = await exchange([[b"HTTP/1.1 100 Continue\r\n\r\n", JSON_200]])
    assert events == [("response", 200)]


async def test_204_has_no_body_and_connection_close_is_honoured() -> None:
    closing = b"HTTP/1.1 429 Too Many\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
    events, conn, _ = await exchange([[b"HTTP/1.1 204 No Content\r\n\r\n"], [closing]])
    assert events == [("response", 204), ("response", 429)]
    assert conn.closed


async def test_a_body_without_length_ends_when_the_server_closes() -> None:
    events, conn, _ = await exchange(
        [[b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nsome text", 0.05, None]]
    )
    assert events == [("response", 200)]
    assert conn.closed


async def test_a_reply_cut_off_mid_body_is_a_connection_failure() -> None:
    cut = b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial":'
    events, conn, _ = await exchange([[cut, 0.05, None]])
    assert events == [("failure", "connection")]
    assert conn.closed and not conn.busy


async def test_something_that_is_not_http_is_a_protocol_failure() -> None:
    events, conn, _ = await exchange([[b"SSH-2.0-OpenSSH_9.0\r\n\r\n"]])
    assert events == [("failure", "protocol")]
    assert conn.closed


async def test_a_repeated_head_is_recognised_and_a_changed_one_parsed_again() -> None:
    # The second reply repeats the first one's head (the fast path); the third changes the status under an
    # otherwise equal head, the fourth the length, the fifth comes in two reads: each is read for what it says.
    other_status = JSON_200.replace(b"200 OK", b"503 Busy")
    longer = JSON_200.replace(b"Length: 11", b"Length: 13") + b"  "
    events, conn, server = await exchange(
        [[JSON_200], [JSON_200], [other_status], [longer], [JSON_200[:-3], 0.05, JSON_200[-3:]], [JSON_200]]
    )
    assert events == [("response", s) for s in (200, 200, 503, 200, 200, 200)]
    assert server.connections == 1 and not conn.busy


async def test_a_repeated_head_on_a_streamed_request_still_times_the_first_chunk() -> None:
    owner = Owner()
    async with ScriptedServer([[JSON_200], [JSON_200]]) as server:
        target = resolve_target(server.url)
        conn = await open_connection(target, owner)
        request = RequestMix(target).next()[0]
        conn.send(request, False, 0.0)
        first = await owner.next()
        conn.send(request, True, 0.0)  # the same reply, but streamed: parsed, and its body's time taken
        second = await owner.next()
        conn.close()
        await asyncio.sleep(0)
    assert first[:2] == second[:2] == ("response", 200)
    assert 0 < conn.first_byte <= second[2]


async def test_a_negative_content_length_is_a_protocol_failure() -> None:
    events, conn, _ = await exchange([[b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n"]])
    assert events == [("failure", "protocol")]
    assert conn.closed
