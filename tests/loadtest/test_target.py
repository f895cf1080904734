"""Targets outside loopback are refused before any traffic; loopback ones are accepted and completed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from slipstream.loadtest import TargetError, is_loopback_address, resolve_target


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1/chat/completions",
        "http://127.3.4.5:8080/",
        "http://localhost:9000",
        "http://[::1]:8080/v1",
        "127.0.0.1:8001",
    ],
)
def test_loopback_targets_are_accepted(url: str) -> None:
    target = resolve_target(url)
    assert target.addresses
    assert all(is_loopback_address(a) for a in target.addresses)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3:8080/v1/chat/completions",
        "http://192.168.1.10/",
        "http://8.8.8.8/",
        "http://[2001:db8::1]:80/",
        "http://0.0.0.0:8080/",
    ],
)
def test_addresses_outside_loopback_are_refused(url: str) -> None:
    with pytest.raises(TargetError, match="outside loopback"):
        resolve_target(url)


def test_unresolvable_names_are_refused() -> None:
    with pytest.raises(TargetError, match="cannot resolve"):
        resolve_target("http://no-such-host.invalid/")


def test_allow_remote_skips_the_check_without_resolving() -> None:
    target = resolve_target("http://10.1.2.3:8080/v1", allow_remote=True)
    assert target.addresses == ()
    assert target.host == "10.1.2.3"


def test_ipv4_mapped_loopback_counts_as_loopback() -> None:
    assert is_loopback_address("::ffff:127.0.0.1")
    assert not is_loopback_address("::ffff:10.0.0.1")
    assert not is_loopback_address("not an address")


def test_urls_are_completed_to_the_chat_endpoint() -> None:
    assert resolve_target("http://127.0.0.1:8080").path == "/v1/chat/completions"
    assert resolve_target("http://127.0.0.1:8080/v1/").path == "/v1/chat/completions"
    assert resolve_target("http://127.0.0.1:8080/custom/path").path == "/custom/path"
    target = resolve_target("http://[::1]:8080/v1")
    assert target.url == "http://[::1]:8080/v1/chat/completions"
    assert target.host_header == "[::1]:8080"
    assert resolve_target("http://127.0.0.1/").host_header == "127.0.0.1"


def test_bad_urls_are_refused() -> None:
    with pytest.raises(TargetError, match="scheme"):
        resolve_target("ftp://127.0.0.1/")
    with pytest.raises(TargetError, match="port"):
        resolve_target("http://127.0.0.1:99999/")


def test_the_command_refuses_a_remote_target_with_exit_code_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "slipstream", "loadtest", "http://10.9.8.7:8080/v1", "-u", "1", "-d", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to load-test" in done.stderr
    assert "--allow-remote" in done.stderr
    assert "Traceback" not in done.stderr
