"""The pipelined connection against a real redis-server: replies matched in order whatever callers do, errors
and outages as redis-py's exceptions, and a new connection after one is lost."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from slipstream.stores.redis import Health, RedisCalls
from slipstream.stores.redis_pipelined import PipelinedConnection, for_url, run_script
from tests.redis_server import RedisServer, raw, redis_server, redis_url  # noqa: F401


@pytest.fixture
async def conn(redis_url: str) -> AsyncIterator[PipelinedConnection]:  # noqa: F811
    connection = for_url(redis_url)
    assert connection is not None
    yield connection
    await connection.aclose()


async def test_commands_and_replies(conn: PipelinedConnection) -> None:
    assert await conn.execute("SET", "k", b"v\x00\xff", "PX", 60_000) == b"OK"
    assert await conn.execute(b"GET", "k") == b"v\x00\xff"
    assert await conn.execute("GET", "missing") is None
    assert await conn.execute("SET", "k", b"w", "NX", "GET") == b"v\x00\xff"  # NX refused, GET answers
    assert 0 < await conn.execute("PTTL", "k") <= 60_000


async def test_concurrent_commands_each_get_their_own_reply(conn: PipelinedConnection) -> None:
    await asyncio.gather(*(conn.execute("SET", f"key{i}", f"value{i}") for i in range(500)))
    replies = await asyncio.gather(*(conn.execute("GET", f"key{i}") for i in range(500)))
    assert replies == [f"value{i}".encode() for i in range(500)]


async def test_an_error_reply_fails_its_command_only(conn: PipelinedConnection) -> None:
    await conn.execute("SET", "text", "not a number")
    results = await asyncio.gather(
        conn.execute("GET", "text"),
        conn.execute("INCR", "text"),
        conn.execute("GET", "text"),
        return_exceptions=True,
    )
    assert results[0] == results[2] == b"not a number"
    assert isinstance(results[1], ResponseError) and "not an integer" in str(results[1])


async def test_a_caller_that_stops_waiting_leaves_the_order_intact(conn: PipelinedConnection) -> None:
    await conn.execute("SET", "a", "1")
    await conn.execute("SET", "b", "2")
    first = asyncio.ensure_future(conn.execute("GET", "a"))
    second = asyncio.ensure_future(conn.execute("GET", "b"))
    await asyncio.sleep(0)  # both sent...
    first.cancel()  # ...and the first abandoned before its reply
    assert await second == b"2"
    assert await conn.execute("GET", "a") == b"1"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_lost_connection_fails_waiters_and_the_next_command_reconnects(
    conn: PipelinedConnection,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    await conn.execute("SET", "k", "v")
    redis_server.stop()
    with pytest.raises(RedisConnectionError):
        await conn.execute("GET", "k")
    with pytest.raises(RedisConnectionError):  # refused while it is down: an error, not a hang
        await conn.execute("GET", "k")
    redis_server.start()
    assert await conn.execute("SET", "k", "again") == b"OK"
    assert await conn.execute("GET", "k") == b"again"


async def test_a_server_that_stops_answering_is_dropped_after_socket_timeout(
    redis_url: str,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
) -> None:
    conn = for_url(redis_url, socket_timeout=0.3)
    assert conn is not None
    try:
        await conn.execute("SET", "k", "v")
        assert redis_server.proc is not None
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(RedisConnectionError, match="did not answer"):
                await conn.execute("GET", "k")
            assert loop.time() - started < 2.0
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        assert await conn.execute("GET", "k") == b"v"  # a new connection
    finally:
        await conn.aclose()


async def test_password_and_database_from_the_url(tmp_path: object) -> None:
    from pathlib import Path

    server = RedisServer(Path(str(tmp_path)), password="s3cret").start()
    try:
        good = for_url(f"redis://:s3cret@127.0.0.1:{server.port}/3")
        bad = for_url(f"redis://:wrong@127.0.0.1:{server.port}/0")
        assert good is not None and bad is not None
        try:
            await good.execute("SET", "k", "in db 3")
            assert await good.execute("GET", "k") == b"in db 3"
            other = for_url(f"redis://:s3cret@127.0.0.1:{server.port}/0")
            assert other is not None
            assert await other.execute("GET", "k") is None  # another database
            await other.aclose()
            with pytest.raises(RedisError, match="setup"):
                await bad.execute("GET", "k")
            clients: list[str] = []
            for _ in range(40):  # the server notices the refused connection's close within a few ms
                clients = (await good.execute("CLIENT", "LIST")).decode().splitlines()
                if len(clients) == 1:
                    break
                await asyncio.sleep(0.05)
            assert len(clients) == 1  # the refused connection was closed, not left open
        finally:
            await good.aclose()
            await bad.aclose()
    finally:
        server.stop()


async def test_closed_connection_refuses_commands(conn: PipelinedConnection) -> None:
    await conn.execute("PING")
    await conn.aclose()
    with pytest.raises(RedisConnectionError):
        await conn.execute("PING")


def test_only_plain_single_servers_are_pipelined() -> None:
    assert for_url("redis://127.0.0.1:6379/0") is not None
    assert for_url("unix:///tmp/redis.sock?db=2") is not None
    assert for_url("rediss://127.0.0.1:6379/0") is None
    assert for_url("redis+cluster://127.0.0.1:7000") is None
    assert for_url("redis+sentinel://127.0.0.1:26379/mymaster") is None


async def test_scripts_run_by_sha_and_are_sent_whole_when_the_server_lost_them(
    conn: PipelinedConnection,
) -> None:
    import hashlib

    source = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])"
    sha = hashlib.sha1(source.encode()).hexdigest()
    await conn.execute("SCRIPT", "FLUSH")
    assert await run_script(conn, sha, source, ["a", "n"], ["x"]) == 1  # NOSCRIPT, then EVAL
    assert await conn.execute("SCRIPT", "EXISTS", sha) == [1]
    assert await run_script(conn, sha, source, ["a", "n"], ["y"]) == 2  # by SHA
    assert await conn.execute("GET", "a") == b"y"
    with pytest.raises(ResponseError):  # the script's own error is the caller's
        await run_script(
            conn, hashlib.sha1(b"x").hexdigest(), "return redis.call('INCR', KEYS[1])", ["a"], []
        )


async def test_calls_send_opens_the_connection_when_none_is_open(conn: PipelinedConnection) -> None:
    calls = RedisCalls("test", Health())
    assert conn.send_nowait((b"PING",)) is None  # nothing open yet
    assert await calls.send(conn, (b"PING",), 2.0) == b"PONG"
    assert conn.send_nowait((b"PING",)) is not None


async def test_calls_send_times_out_and_hands_the_late_reply_to_on_abandon(
    conn: PipelinedConnection,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    calls = RedisCalls("test", Health())
    await conn.execute("PING")
    undone: list[object] = []

    async def undo(reply: object) -> None:
        undone.append(reply)

    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(TimeoutError):
            await calls.send(
                conn, (b"SET", b"lease", b"me", b"NX", b"GET", b"PX", 60_000), 0.1, on_abandon=undo
            )
        assert calls.timeouts == 1 and undone == []
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    await calls.drain(2.0)
    assert undone == [None]  # the SET landed after its caller left: the undo sees its reply
    assert await conn.execute("GET", "lease") == b"me"
