"""The agency client as wiring builds it with `[http] pool = "aiohttp"`: `read_reply`'s direct
path (aiohttp without httpx's client) keeps the seam's behaviour: connection reuse, headers,
the size bound, the call deadline and the classification of failures."""

from __future__ import annotations

import asyncio
import gzip

import httpx
import pytest

from adapters.base import ErrorContext, classify_httpx_error
from adapters.deadline import CallDeadlineExceeded
from adapters.http_transport import OutgoingClient
from adapters.replies import read_reply
from adapters.wire import capturing
from config.settings import AgencySettings, HttpSettings
from domain.errors import AdapterMisconfigured, AgencyProtocolError, AgencyUnreachable, OutcomeUnknown
from tests.integration.test_http_transport import Agency, Request, freed_port, reply, serve  # noqa: F401
from wiring.agencies import agency_http_client

pytestmark = pytest.mark.anyio
CTX = ErrorContext("inps", "IscrizioneAzienda", "dlv-1")
#: A reply far larger than the socket buffers, so that most of it is still unread when refused.
BIG = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def agency_client(url: str, **conf: object) -> httpx.AsyncClient:
    client = agency_http_client(AgencySettings(endpoint=url, **conf), 4)  # type: ignore[arg-type]
    assert isinstance(client, OutgoingClient) and client.direct is not None  # the direct path applies
    return client


async def test_direct_calls_share_a_connection_and_send_the_clients_headers(serve) -> None:
    """Three POSTs on one kept-alive connection, with httpx's default headers and the call's."""
    agency = await serve()
    async with agency_client(agency.url) as http:
        with capturing() as wire:
            for i in range(3):
                response = await read_reply(http, "POST", agency.url + "/soap", content=b"m%d" % i,
                                            headers={"SOAPAction": '"urn:x"'}, max_bytes=1024, ctx=CTX)
                assert response.status_code == 200 and response.content == b"echo:m%d" % i
        assert wire.sent == "m2" and wire.received == "echo:m2"
        assert response.url == agency.url + "/soap"
    assert agency.accepted == 1
    headers = agency.on(1)[0].headers
    assert headers["soapaction"] == '"urn:x"' and headers["user-agent"].startswith("python-httpx/")


async def test_direct_reply_is_decoded_and_bounded_in_decoded_bytes(serve) -> None:
    """A gzip reply comes back decoded; one that decodes past the bound is refused."""
    async def zipped(writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(reply(gzip.compress(b"x" * int(request.body)), headers=b"Content-Encoding: gzip\r\n"))
        return True

    agency = await serve(zipped)
    async with agency_client(agency.url) as http:
        small = await read_reply(http, "POST", agency.url, content=b"100", max_bytes=1000, ctx=CTX)
        assert small.content == b"x" * 100 and "content-encoding" not in small.headers
        with pytest.raises(AgencyProtocolError) as caught:
            await read_reply(http, "POST", agency.url, content=b"5000", max_bytes=1000, ctx=CTX)
    assert caught.value.code == "REPLY_TOO_LARGE"


async def test_direct_and_httpx_paths_give_the_same_reply_as_httpx_showed_it(serve) -> None:
    """A gzip reply with a repeated header, read by the direct path, by httpx's client on aiohttp
    and on httpx's own transport: the same status, body and headers, as httpx's `Response` showed
    them (names without case, a repeated one joined, the wire's framing dropped, the decoded
    length), the same encoding."""
    body = b"<r>" + b"x" * 500 + b"</r>"

    async def answer(writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(reply(gzip.compress(body), status=b"201 Created", headers=(
            b"Content-Type: text/xml; charset=ISO-8859-1\r\nX-Ref: a\r\nContent-Encoding: gzip\r\nx-ref: b\r\n")))
        return True

    agency = await serve(answer)
    expected = httpx.Response(201, headers=[(b"Content-Type", b"text/xml; charset=ISO-8859-1"),
                                            (b"X-Ref", b"a"), (b"x-ref", b"b")], content=body)
    clients = [agency_client(agency.url), agency_http_client(AgencySettings(endpoint=agency.url),
                                                             4, HttpSettings(pool="aiohttp")),
               agency_http_client(AgencySettings(endpoint=agency.url), 4, HttpSettings(pool="httpx"))]
    clients[1].direct = None  # type: ignore[attr-defined] # the same client, through httpx's seam
    for http in clients:
        async with http:
            got = await read_reply(http, "POST", agency.url + "/soap", content=b"m", max_bytes=4096, ctx=CTX)
        assert (got.status_code, got.content, got.url) == (201, body, agency.url + "/soap")
        assert dict(got.headers) == dict(expected.headers.items())
        assert got.headers.get("X-REF") == "a, b" and got.headers["Content-Length"] == str(len(body))
        assert "content-encoding" not in got.headers and got.encoding == expected.encoding == "iso-8859-1"


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_direct_reply_over_the_bound_is_refused_and_its_connection_dropped(serve, framing: str) -> None:
    """Declared or streamed past `max_bytes`: REPLY_TOO_LARGE; the connection, with most of the
    reply unread on it, is dropped and the next call opens another."""
    async def large(writer: asyncio.StreamWriter, request: Request) -> bool:
        if request.body == b"small":
            writer.write(reply(b"ok"))
        elif framing == "length":
            writer.write(reply(b"x" * BIG))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + b"%x\r\n" % BIG + b"x" * BIG + b"\r\n0\r\n\r\n")
        return True

    agency = await serve(large)
    async with agency_client(agency.url) as http:
        with pytest.raises(AgencyProtocolError) as caught:
            await read_reply(http, "POST", agency.url, content=b"big", max_bytes=1024, ctx=CTX)
        assert caught.value.code == "REPLY_TOO_LARGE"
        assert (await read_reply(http, "POST", agency.url, content=b"small", max_bytes=1024, ctx=CTX)).content == b"ok"
    assert agency.accepted == 2


async def test_direct_failures_are_classified_as_on_httpx() -> None:
    """Nobody listening: ConnectError, unreachable (never sent)."""
    url = f"http://127.0.0.1:{freed_port()}/soap"
    async with agency_client(url) as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await read_reply(http, "POST", url, content=b"x", max_bytes=1024, ctx=CTX)
    assert isinstance(classify_httpx_error(caught.value, CTX), AgencyUnreachable)


async def test_direct_silence_after_sending_is_an_outcome_unknown(serve) -> None:
    """The request went out and no byte came back within the read timeout: ReadTimeout."""
    gate = asyncio.Event()

    async def silent(writer: asyncio.StreamWriter, request: Request) -> bool:
        await gate.wait()
        return False

    agency = await serve(silent)
    async with agency_client(agency.url, read_timeout=0.2) as http:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await read_reply(http, "POST", agency.url, content=b"x", max_bytes=1024, ctx=CTX)
    gate.set()
    assert isinstance(classify_httpx_error(caught.value, CTX), OutcomeUnknown)


async def test_direct_header_injection_is_refused_before_connecting(serve) -> None:
    """CR/LF in a header value: LocalProtocolError (misconfigured), nothing reaches the agency."""
    agency = await serve()
    async with agency_client(agency.url) as http:
        with pytest.raises(httpx.LocalProtocolError) as caught:
            await read_reply(http, "POST", agency.url, content=b"x", max_bytes=1024, ctx=CTX,
                             headers={"X-Reply-To": "a\r\nInjected: 1"})
    assert isinstance(classify_httpx_error(caught.value, CTX), AdapterMisconfigured)
    assert agency.accepted == 0


async def test_direct_trickling_reply_ends_at_the_call_deadline(serve) -> None:
    """A reply trickling a byte at a time, each well within the read timeout, ends at the call
    deadline as an outcome unknown; its connection is dropped and the next call reconnects."""
    async def trickle(writer: asyncio.StreamWriter, request: Request) -> bool:
        if request.body == b"ok":
            writer.write(reply(b"ok"))
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            await writer.drain()
            await asyncio.sleep(0.05)  # the agency's pace, not a synchronisation
            writer.write(b"x")
        return True

    agency = await serve(trickle)
    async with agency_client(agency.url, read_timeout=2.0, call_deadline=0.4) as http:
        with pytest.raises(CallDeadlineExceeded) as caught:
            await read_reply(http, "POST", agency.url, content=b"slow", max_bytes=4096, ctx=CTX)
        assert isinstance(classify_httpx_error(caught.value, CTX), OutcomeUnknown)
        assert (await read_reply(http, "POST", agency.url, content=b"ok", max_bytes=4096, ctx=CTX)).content == b"ok"
    assert agency.accepted == 2
