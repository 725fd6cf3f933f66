"""HTTPS rua delivery: the SSRF decision (no connections), then a real HTTPS receiver."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

import httpx
import pytest

from app.config import HttpsSettings
from app.delivery.errors import PermanentDeliveryError, TemporaryDeliveryError
from app.delivery.https import (
    HttpsPoster,
    parse_https_rua,
    refusal_reason,
)
from app.dns.resolver import TemporaryDnsError
from tests.delivery.certs import LoopbackCa
from tests.delivery.sinks import HttpsReceiver, https_receiver

BODY = b"\x1f\x8b\x08\x00gzip-bytes"
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


class FakeResolver:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve_addresses(self, host: str) -> list[str]:
        self.asked.append(host)
        if host == "servfail.example":
            raise TemporaryDnsError("servfail.example: no nameserver answered")
        return self.answers.get(host, [])


class NoConnections(httpx.AsyncBaseTransport):
    """Fails the test if the poster tries to send anything."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"a connection was attempted to {request.url}")


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "private"),
        ("100.64.0.1", "not globally routable"),
        ("::ffff:127.0.0.1", "loopback"),
        ("64:ff9b::a00:1", "private"),
        ("2002:7f00:1::", "loopback"),
        ("93.184.215.14", None),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", None),
    ],
)
def test_refusal_reason(address: str, reason: str | None) -> None:
    assert refusal_reason(ipaddress.ip_address(address), []) == reason


def test_allow_list_exempts_its_networks() -> None:
    allowed = [ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("::1/128")]
    assert refusal_reason(ipaddress.ip_address("10.1.2.3"), allowed) is None
    assert refusal_reason(ipaddress.ip_address("10.2.0.1"), allowed) == "private"
    assert refusal_reason(ipaddress.ip_address("::1"), allowed) is None
    assert refusal_reason(ipaddress.ip_address("127.0.0.1"), allowed) == "loopback"


@pytest.mark.parametrize(
    ("rua", "host", "port", "target"),
    [
        ("https://Rua.Example/v1/tlsrpt", "rua.example", 443, "/v1/tlsrpt"),
        ("https://rua.example:8443", "rua.example", 8443, "/"),
        ("https://rua.example/p?a=1", "rua.example", 443, "/p?a=1"),
        ("https://[::1]:444/x", "::1", 444, "/x"),
    ],
)
def test_parse_https_rua(rua: str, host: str, port: int, target: str) -> None:
    parsed = parse_https_rua(rua)
    assert (parsed.host, parsed.port, parsed.target) == (host, port, target)


@pytest.mark.parametrize(
    "rua",
    [
        "http://rua.example/",
        "https://user:pw@rua.example/",
        "https://rua.example:99999/",
        "https://rua example/",
        "https://rua.example/\r\nX: y",
        "https://-bad-.example/",
        "https:///path-only",
    ],
)
def test_bad_https_rua_is_refused(rua: str) -> None:
    with pytest.raises(ValueError):
        parse_https_rua(rua)


@pytest.mark.parametrize(
    ("rua", "answers", "reason"),
    [
        ("https://127.0.0.1/", {}, "127.0.0.1 (loopback)"),
        ("https://10.0.0.1/", {}, "10.0.0.1 (private)"),
        ("https://v6.example/", {"v6.example": ["::1"]}, "::1 (loopback)"),
        ("https://mixed.example/", {"mixed.example": ["10.9.9.9", "fe80::1"]}, "fe80::1"),
        ("https://gone.example/", {}, "gone.example has no address"),
        ("http://plain.example/", {}, "not an https: URI"),
    ],
)
async def test_refused_targets_never_get_a_connection(
    rua: str, answers: dict[str, list[str]], reason: str
) -> None:
    poster = HttpsPoster(HttpsSettings(), FakeResolver(answers), transport=NoConnections())
    with pytest.raises(PermanentDeliveryError) as refused:
        await poster.post(rua, BODY)
    assert reason in refused.value.reason
    await poster.aclose()


async def test_temporary_dns_failure_is_temporary() -> None:
    poster = HttpsPoster(HttpsSettings(), FakeResolver({}), transport=NoConnections())
    with pytest.raises(TemporaryDeliveryError, match="DNS") as failed:
        await poster.post("https://servfail.example/", BODY)
    assert "no nameserver answered" in failed.value.excerpt
    await poster.aclose()


async def test_connects_to_the_checked_address_with_the_urls_name() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, text="accepted")

    # DNS returns a private address first: it is skipped, never connected to.
    resolver = FakeResolver({"rua.example": ["10.0.0.7", "93.184.215.14"]})
    poster = HttpsPoster(HttpsSettings(), resolver, transport=httpx.MockTransport(answer))
    receipt = await poster.post("https://rua.example/v1/?x=1", BODY)
    await poster.aclose()
    assert receipt.code == 202
    [request] = seen
    assert request.url.host == "93.184.215.14"
    assert request.url.raw_path == b"/v1/?x=1"
    assert request.headers["host"] == "rua.example"
    assert request.headers["content-type"] == "application/tlsrpt+gzip"
    assert request.extensions["sni_hostname"] == "rua.example"
    assert request.content == BODY


def loopback_poster(
    ca: LoopbackCa | None, answers: dict[str, list[str]], **kw: object
) -> HttpsPoster:
    values: dict[str, object] = {
        "allowed_networks": LOOPBACK,
        "ca_file": ca.ca_file if ca else None,
        "timeout_seconds": 5.0,
    }
    settings = HttpsSettings(**(values | kw))  # type: ignore[arg-type]
    return HttpsPoster(settings, FakeResolver(answers))


async def test_post_reaches_a_real_https_server(test_ca: LoopbackCa) -> None:
    app = HttpsReceiver(statuses=[503, 429, 408, 404, 400])
    async with https_receiver(app, str(test_ca.cert_file), str(test_ca.key_file)) as port:
        poster = loopback_poster(test_ca, {"rua.test": ["127.0.0.1"]})
        rua = f"https://rua.test:{port}/v1/tlsrpt"
        outcomes: list[object] = []
        for _ in range(6):
            try:
                outcomes.append((await poster.post(rua, BODY)).code)
            except (TemporaryDeliveryError, PermanentDeliveryError) as exc:
                outcomes.append((type(exc).__name__, exc.code))
        await poster.aclose()
    assert outcomes == [
        ("TemporaryDeliveryError", 503),
        ("TemporaryDeliveryError", 429),
        ("TemporaryDeliveryError", 408),
        ("PermanentDeliveryError", 404),
        ("PermanentDeliveryError", 400),
        200,
    ]
    [post] = app.posts
    assert post.path == "/v1/tlsrpt"
    assert post.host == f"rua.test:{port}"
    assert post.content_type == "application/tlsrpt+gzip"
    assert post.body == BODY


async def test_redirects_are_not_followed(test_ca: LoopbackCa) -> None:
    app = HttpsReceiver(redirect_to="https://127.0.0.1:1/elsewhere")
    async with https_receiver(app, str(test_ca.cert_file), str(test_ca.key_file)) as port:
        poster = loopback_poster(test_ca, {"rua.test": ["127.0.0.1"]})
        with pytest.raises(PermanentDeliveryError, match="redirect") as redirected:
            await poster.post(f"https://rua.test:{port}/", BODY)
        await poster.aclose()
    assert redirected.value.code == 307


async def test_certificate_is_checked_against_the_urls_name(test_ca: LoopbackCa) -> None:
    app = HttpsReceiver()
    async with https_receiver(app, str(test_ca.cert_file), str(test_ca.key_file)) as port:
        answers = {"rua.test": ["127.0.0.1"], "wrong.test": ["127.0.0.1"]}
        untrusting = loopback_poster(None, answers)
        with pytest.raises(TemporaryDeliveryError) as untrusted:
            await untrusting.post(f"https://rua.test:{port}/", BODY)
        trusting = loopback_poster(test_ca, answers)
        with pytest.raises(TemporaryDeliveryError) as mismatch:
            await trusting.post(f"https://wrong.test:{port}/", BODY)
        relaxed = loopback_poster(None, answers, verify_certificates=False)
        await relaxed.post(f"https://wrong.test:{port}/", BODY)
        for poster in (untrusting, trusting, relaxed):
            await poster.aclose()
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.value.excerpt
    assert "wrong.test" in mismatch.value.excerpt
    assert len(app.posts) == 1


async def test_ipv6_receiver_and_fallback_to_the_next_address(test_ca: LoopbackCa) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.2", 0))
        app = HttpsReceiver()
        async with https_receiver(
            app, str(test_ca.cert_file), str(test_ca.key_file), "::1"
        ) as port:
            # 127.0.0.2 refuses the connection; the next permitted address is tried.
            poster = loopback_poster(test_ca, {"rua.test": ["127.0.0.2", "::1"]})
            receipt = await poster.post(f"https://rua.test:{port}/r", BODY)
            await poster.aclose()
    assert receipt.code == 200
    assert app.posts[0].host == f"rua.test:{port}"


async def test_connection_refused_and_timeouts_are_temporary(test_ca: LoopbackCa) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        poster = loopback_poster(test_ca, {})
        with pytest.raises(TemporaryDeliveryError, match="can not connect"):
            await poster.post(f"https://127.0.0.1:{port}/", BODY)
        await poster.aclose()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    await expect_temporary(test_ca, silent, timeout_seconds=0.3, match="timed out")


async def expect_temporary(
    test_ca: LoopbackCa,
    handler: Callable[..., Awaitable[None]],
    *,
    timeout_seconds: float,
    match: str,
) -> None:
    """POST to a TLS server on 127.0.0.1 running `handler`: a TemporaryDeliveryError."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=test_ca.server_context())
    port = server.sockets[0].getsockname()[1]
    try:
        poster = loopback_poster(test_ca, {}, timeout_seconds=timeout_seconds)
        with pytest.raises(TemporaryDeliveryError, match=match):
            await poster.post(f"https://127.0.0.1:{port}/", BODY)
        await poster.aclose()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed without answering
        b"SMTP? 220 hello\r\n\r\n",  # not HTTP
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",  # endless headers
    ],
)
async def test_broken_answers_are_temporary(test_ca: LoopbackCa, answer: bytes) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    await expect_temporary(test_ca, broken, timeout_seconds=2.0, match="connection failed")
