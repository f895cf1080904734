"""``connect(url)``: the URL forms, and real servers behind them — a password, a database number, TLS, Sentinel.

Every server here is a real ``redis-server`` started in a temp dir (tests/redis_server.py); TLS certificates
are made with the ``openssl`` command. Cluster is in test_redis_cluster.py.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ConnectionError, RedisError

from slipstream.stores.redis import RedisStore
from slipstream.stores.redis_connect import connect, parse_redis_url, redact_url
from tests.redis_server import REDIS_SERVER, RedisServer, free_port, redis_server, redis_url, send_command  # noqa: F401

PASSWORD = "s3cret-pass"

# ------------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("url", "kind", "hosts", "db", "service"),
    [
        ("redis://127.0.0.1:6380/2", "server", (("127.0.0.1", 6380),), 2, None),
        ("redis://localhost", "server", (("localhost", 6379),), 0, None),
        ("redis://h?db=5", "server", (("h", 6379),), 5, None),
        ("redis://[::1]:7000/1", "server", (("::1", 7000),), 1, None),
        ("rediss://h:6390/0", "server", (("h", 6390),), 0, None),
        ("redis+sentinel://a:1,b:2/mymaster", "sentinel", (("a", 1), ("b", 2)), 0, "mymaster"),
        ("redis+sentinel://a/mymaster/4", "sentinel", (("a", 26379),), 4, "mymaster"),
        (
            "redis+cluster://h1:7000,h2:7001,h3",
            "cluster",
            (("h1", 7000), ("h2", 7001), ("h3", 6379)),
            0,
            None,
        ),
    ],
)
def test_url_forms(
    url: str, kind: str, hosts: tuple[tuple[str, int], ...], db: int, service: str | None
) -> None:
    target = parse_redis_url(url)
    assert (target.kind, target.hosts, target.db, target.service) == (kind, hosts, db, service)
    assert target.tls == url.startswith("rediss")


def test_credentials_and_options() -> None:
    target = parse_redis_url("rediss://app:p%40ss%3Aw@h:1/3?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem")
    assert (target.username, target.password) == ("app", "p@ss:w")  # percent-decoded
    assert dict(target.options) == {
        "ssl_cert_reqs": "none",
        "ssl_ca_certs": "/ca.pem",
        "ssl_check_hostname": False,
    }
    assert "p@ss" not in repr(target)
    target = parse_redis_url("redis+sentinel://:pw@a:1/m?sentinel_password=sp&socket_timeout=0.5")
    assert target.password == "pw" and dict(target.options) == {
        "sentinel_password": "sp",
        "socket_timeout": 0.5,
    }
    unix = parse_redis_url("unix:///run/redis.sock?db=2")
    assert (unix.kind, unix.path, unix.db, unix.hosts) == ("server", "/run/redis.sock", 2, ())


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://:s3cret@h", "unsupported"),
        ("redis://:s3cret@a,b", "several hosts"),
        ("redis+cluster://:s3cret@h:1/1", "only database 0"),
        ("redis://:s3cret@h/x", "must be a number"),
        ("redis://:s3cret@h/1?db=2", "once"),
        ("redis://:s3cret@h?colour=red", "unknown option 'colour'"),
        ("redis://:s3cret@h?ssl_cert_reqs=none", "no TLS"),
        ("rediss://:s3cret@h?ssl_cert_reqs=maybe", "none, optional or required"),
        ("redis://:s3cret@h?sentinel_password=x", r"need redis\+sentinel"),
        ("redis+sentinel://:s3cret@h:1", "names no service"),
        ("redis://:s3cret@h:99999", "bad port"),
        ("redis://:s3cret@h?socket_timeout=-1", "positive"),
        ("unix://:s3cret@host/sock", "takes no host"),
    ],
)
def test_bad_urls_are_refused_without_showing_the_password(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        parse_redis_url(url)
    assert "s3cret" not in str(caught.value)


def test_redact_hides_passwords_only() -> None:
    assert redact_url("redis://:pw@h:1/2") == "redis://:***@h:1/2"
    assert redact_url("rediss://user:pw@h/0?ssl_cert_reqs=none") == "rediss://user:***@h/0?ssl_cert_reqs=none"
    assert redact_url("redis+sentinel://a:1,b:2/m?sentinel_password=x") == (
        "redis+sentinel://a:1,b:2/m?sentinel_password=***"
    )
    assert redact_url("redis://user@h") == "redis://user@h"
    assert redact_url("unix:///tmp/r.sock?db=3") == "unix:///tmp/r.sock?db=3"


@pytest.mark.parametrize("password", ["s3cr?et", "s3cr/et", "s3cr#et", "s3:cr@et"])
def test_passwords_with_url_delimiters_are_read_whole_and_never_shown(password: str) -> None:
    target = parse_redis_url(f"redis://user:{password}@h:1/2")
    assert (target.username, target.password, target.hosts, target.db) == ("user", password, (("h", 1),), 2)
    assert password not in redact_url(f"redis://user:{password}@h:1/2?db=2")
    with pytest.raises(ValueError) as caught:
        parse_redis_url(f"redis://:{password}@h:1/2?colour=red")
    message = str(caught.value)
    assert (
        "unknown option 'colour'" in message
    )  # the query was read as the query, not as part of the password
    assert "s3" not in message and "et@" not in message and "@et" not in message
    assert redact_url("redis://h/0?password=hunter2&socket_timeout=1") == (
        "redis://h/0?password=***&socket_timeout=1"
    )


# ---------------------------------------------------------------------------------- one plain server


def _connected_clients(port: int, password: str | None = None) -> int:
    info = send_command(port, "INFO", "clients", password=password).decode()
    return int(info.split("connected_clients:")[1].split("\r\n")[0]) - 1  # not counting this very connection


async def test_blocking_pool_waits_for_a_free_connection(redis_url: str, redis_server: RedisServer) -> None:  # noqa: F811
    client = connect(redis_url, max_connections=2)
    before = _connected_clients(redis_server.port)
    try:
        # 50 concurrent commands through 2 connections: they queue for the pool instead of failing.
        results = await asyncio.gather(*(client.incr("n") for _ in range(50)))
        assert sorted(results) == list(range(1, 51))
        assert _connected_clients(redis_server.port) - before == 2
    finally:
        await client.aclose()


async def test_database_number_from_the_url(redis_url: str, redis_server: RedisServer) -> None:  # noqa: F811
    client = connect(f"redis://127.0.0.1:{redis_server.port}/5")
    raw5 = aioredis.Redis(port=redis_server.port, db=5)
    raw0 = aioredis.Redis(port=redis_server.port, db=0)
    try:
        await client.set("where", "five")
        assert await raw5.get("where") == b"five"
        assert await raw0.get("where") is None
    finally:
        for c in (client, raw5, raw0):
            await c.aclose()


# ---------------------------------------------------------------------------------------- password


@pytest.fixture(scope="module")
def protected() -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server binary not found")
    with tempfile.TemporaryDirectory(prefix="slipstream-redis-auth-") as tmp:
        server = RedisServer(Path(tmp), password=PASSWORD).start()
        try:
            yield server
        finally:
            server.stop()


async def test_password_from_the_url(protected: RedisServer) -> None:
    store = RedisStore(f"redis://:{PASSWORD}@127.0.0.1:{protected.port}/1", get_timeout=2.0, set_timeout=2.0)
    try:
        await store.set("k", b"value", 60)
        entry = await store.get("k")
        assert entry is not None and entry.value == b"value"
        assert store.errors == 0
    finally:
        await store.aclose()


async def test_wrong_or_missing_password_is_refused(protected: RedisServer) -> None:
    for url in (f"redis://:wrong@127.0.0.1:{protected.port}", f"redis://127.0.0.1:{protected.port}"):
        client = connect(url)
        try:
            with pytest.raises((AuthenticationError, RedisError)):
                await client.set("k", "v")
        finally:
            await client.aclose()


# --------------------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[RedisServer, int, Path]]:
    """A server with a plain port (for the fixture's own checks) and a TLS port; its certificate is self-signed
    for 127.0.0.1, so the certificate file is also the CA file a client trusts."""
    openssl = shutil.which("openssl")
    if openssl is None or not Path(REDIS_SERVER).exists():
        pytest.skip("needs redis-server and the openssl command")
    with tempfile.TemporaryDirectory(prefix="slipstream-redis-tls-") as tmp:
        folder = Path(tmp)
        cert, key = folder / "cert.pem", folder / "key.pem"
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        tls_port = free_port()
        args = ["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]  # fmt: skip
        server = RedisServer(folder, args=args)
        try:
            server.start()
        except RuntimeError as exc:
            if "tls" in str(exc).lower():
                pytest.skip(f"this redis-server was built without TLS: {exc}")
            raise
        try:
            yield server, tls_port, cert
        finally:
            server.stop()


async def test_tls_with_a_trusted_certificate(tls_server: tuple[RedisServer, int, Path]) -> None:
    _, port, cert = tls_server
    client = connect(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}")
    try:
        await client.set("over-tls", "yes")
        assert await client.get("over-tls") == b"yes"
        assert isinstance(client, aioredis.Redis)
        assert client.connection_pool.connection_class is aioredis.SSLConnection
    finally:
        await client.aclose()


async def test_tls_without_verification(tls_server: tuple[RedisServer, int, Path]) -> None:
    _, port, _ = tls_server
    client = connect(f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=none")
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_tls_refuses_an_untrusted_certificate(tls_server: tuple[RedisServer, int, Path]) -> None:
    _, port, _ = tls_server
    client = connect(f"rediss://127.0.0.1:{port}/0")  # the system CAs do not know our self-signed certificate
    try:
        with pytest.raises(ConnectionError):
            await client.ping()
    finally:
        await client.aclose()


# ---------------------------------------------------------------------------------------- Sentinel


class SentinelProcess:
    """``redis-server <conf> --sentinel`` watching one master (password-protected) as ``mymaster``."""

    def __init__(self, folder: Path, master: RedisServer) -> None:
        self.port = free_port()
        self.folder = folder
        self.conf = folder / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
            f"sentinel auth-pass mymaster {master.password}\n"
            "sentinel down-after-milliseconds mymaster 2000\nsentinel failover-timeout mymaster 10000\n"
        )
        self.proc = subprocess.Popen(
            [REDIS_SERVER, str(self.conf), "--sentinel"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while b"127.0.0.1" not in self._ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the sentinel did not start")
            time.sleep(0.05)

    def _ask(self, *words: str) -> bytes:
        try:
            return send_command(self.port, *words, timeout=1.0)
        except OSError:
            return b""

    def clients(self) -> int:
        info = self._ask("INFO", "clients").decode()
        return int(info.split("connected_clients:")[1].split("\r\n")[0])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def sentinel_setup() -> Iterator[tuple[RedisServer, RedisServer, SentinelProcess]]:
    """A master, a replica of it, and one sentinel (quorum 1)."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server binary not found")
    with tempfile.TemporaryDirectory(prefix="slipstream-redis-sentinel-") as tmp:
        root = Path(tmp)
        (root / "master").mkdir()
        (root / "replica").mkdir()
        (root / "sentinel").mkdir()
        master = RedisServer(root / "master", password=PASSWORD, args=["--masterauth", PASSWORD]).start()
        replica = RedisServer(
            root / "replica",
            password=PASSWORD,
            args=["--replicaof", "127.0.0.1", str(master.port), "--masterauth", PASSWORD],
        )
        sentinel: SentinelProcess | None = None
        try:
            replica.start()
            sentinel = SentinelProcess(root / "sentinel", master)
            yield master, replica, sentinel
        finally:
            if sentinel is not None:
                sentinel.stop()
            replica.stop()
            master.stop()


@pytest.fixture
async def sentinel_url(
    sentinel_setup: tuple[RedisServer, RedisServer, SentinelProcess],
) -> AsyncIterator[str]:
    yield f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinel_setup[2].port}/mymaster/3"


async def test_sentinel_finds_the_master(
    sentinel_setup: tuple[RedisServer, RedisServer, SentinelProcess], sentinel_url: str
) -> None:
    master = sentinel_setup[0]
    store = RedisStore(sentinel_url, get_timeout=2.0, set_timeout=2.0)
    raw = aioredis.Redis(port=master.port, db=3, password=PASSWORD)
    try:
        await store.set("via-sentinel", b"found", 60)
        entry = await store.get("via-sentinel")
        assert entry is not None and entry.value == b"found"
        assert await raw.exists("slipstream:cache:via-sentinel") == 1  # on the master, in database 3
    finally:
        await store.aclose()
        await raw.aclose()


async def test_sentinel_pool_waits_for_a_free_connection(
    sentinel_setup: tuple[RedisServer, RedisServer, SentinelProcess], sentinel_url: str
) -> None:
    """redis-py's own Sentinel pool raises "Too many connections" at once; ours queues like the others."""
    client = connect(sentinel_url, max_connections=2)
    try:
        await client.delete("n")
        results = await asyncio.gather(*(client.incr("n") for _ in range(50)))
        assert sorted(results) == list(range(1, 51))
    finally:
        await client.aclose()


async def test_closing_a_sentinel_client_closes_the_sentinel_connections(
    sentinel_setup: tuple[RedisServer, RedisServer, SentinelProcess], sentinel_url: str
) -> None:
    sentinel = sentinel_setup[2]
    before = sentinel.clients()
    client = connect(sentinel_url)
    await client.set("k", "v")
    assert sentinel.clients() > before  # it asked the sentinel where the master is
    await client.aclose()
    for _ in range(200):  # the sentinel notices closed sockets at once; give it up to 10 s all the same
        if sentinel.clients() <= before:
            break
        await asyncio.sleep(0.05)
    assert sentinel.clients() == before


async def test_sentinel_client_follows_a_failover(
    sentinel_setup: tuple[RedisServer, RedisServer, SentinelProcess], sentinel_url: str
) -> None:
    """After ``SENTINEL FAILOVER`` the replica is the master; the same client writes there without a restart
    (a command or two may fail while it switches: the request path has no retries of its own)."""
    _, replica, sentinel = sentinel_setup
    client = connect(sentinel_url)
    try:
        await client.set("before", "1")
        # The sentinel learns of the replica from the master's INFO (every 10 s at first): wait until it can fail over.
        deadline = time.monotonic() + 30
        while not send_command(sentinel.port, "SENTINEL", "FAILOVER", "mymaster").startswith(b"+OK"):
            assert time.monotonic() < deadline, "the sentinel never found the replica"
            await asyncio.sleep(0.2)
        raw = aioredis.Redis(port=replica.port, db=3, password=PASSWORD)
        try:
            attempt, reached = 0, False
            while not reached and time.monotonic() < deadline + 30:
                attempt += 1
                try:
                    await client.set("after", attempt)
                except RedisError:  # the old master refuses writes (READONLY) until the client reconnects
                    await asyncio.sleep(0.1)
                    continue
                promoted = b"role:master" in send_command(
                    replica.port, "INFO", "replication", password=PASSWORD
                )
                reached = promoted and await raw.get("after") == str(attempt).encode()
                if not reached:
                    await asyncio.sleep(0.1)
            assert reached, "the client never wrote to the new master"
        finally:
            await raw.aclose()
    finally:
        await client.aclose()
