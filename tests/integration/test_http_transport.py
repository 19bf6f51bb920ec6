"""The agency clients' transport (`AiohttpTransport`) against real loopback servers: framing,
reuse, limits and failures, each read as the adapters classify it."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from adapters.base import ErrorContext, classify_httpx_error
from adapters.deadline import CallDeadlineExceeded, DeadlineTransport
from adapters.http_transport import AiohttpTransport
from domain.errors import AdapterMisconfigured, AgencyUnreachable, OutcomeUnknown

pytestmark = pytest.mark.anyio

#: Bound of every wait on a condition.
BOUND = 5.0
TIMEOUT = httpx.Timeout(connect=2.0, read=5.0, write=5.0, pool=5.0)
CTX = ErrorContext("inps", "IscrizioneAzienda", "dlv-1")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


class Request(NamedTuple):
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request as the server reads it, or None at a clean end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")  # the client sends no trailers
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, target, headers, body)


def reply(body: bytes = b"ok", *, status: bytes = b"200 OK", headers: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), headers, body)


#: Answers one request; returns whether the connection stays open.
Respond = Callable[[asyncio.StreamWriter, Request], Awaitable[bool]]


async def echo(writer: asyncio.StreamWriter, request: Request) -> bool:
    writer.write(reply(b"echo:" + request.body))
    return True


class Agency:
    """A loopback HTTP/1.1 server; `respond` scripts each answer, `raw` a whole connection."""

    def __init__(self, respond: Respond = echo,
                 raw: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]] | None = None,
                 tls: ssl.SSLContext | None = None):
        self.respond = respond
        self.raw = raw
        self.tls = tls
        self.accepted = 0
        self.open = 0
        self.max_open = 0
        self.closed = 0
        self.requests: list[tuple[int, Request]] = []  #: (connection number, request)
        self.url = ""
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Agency:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(BOUND), self._changed:
            await self._changed.wait_for(predicate)

    def on(self, number: int) -> list[Request]:
        """The requests connection `number` carried."""
        return [r for n, r in self.requests if n == number]

    async def _changed_now(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        number = self.accepted
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        await self._changed_now()
        try:
            if self.raw is not None:
                await self.raw(reader, writer)
                return
            while (request := await read_request(reader)) is not None:
                self.requests.append((number, request))
                await self._changed_now()
                keep = await self.respond(writer, request)
                await writer.drain()
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client dropped the connection: what the test provoked
        finally:
            writer.close()
            self.open -= 1
            self.closed += 1
            self._tasks.discard(task)
            await self._changed_now()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Agency]]]:
    started: list[Agency] = []

    async def start(respond: Respond = echo, **kwargs: object) -> Agency:
        agency = await Agency(respond, **kwargs).start()  # type: ignore[arg-type]
        started.append(agency)
        return agency

    yield start
    for agency in started:
        await agency.stop()


def client(connections: int = 8, **options: object) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(transport=AiohttpTransport(limits=limits, **options),  # type: ignore[arg-type]
                             timeout=TIMEOUT, trust_env=False)


def freed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- keep-alive and framing ------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(serve) -> None:
    """Five calls one after the other travel on a single kept-alive connection."""
    agency = await serve()
    async with client() as http:
        for i in range(5):
            response = await http.post(agency.url + "/soap", content=b"m%d" % i)
            assert response.status_code == 200 and response.content == b"echo:m%d" % i
            assert response.http_version == "HTTP/1.1" and response.reason_phrase == "OK"
    assert agency.accepted == 1 and len(agency.on(1)) == 5


async def test_chunked_body_is_reassembled(serve) -> None:
    """Chunks (with extensions and a trailer) make one body; the connection is reused."""
    async def chunked(writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n")
        await writer.drain()
        writer.write(b"6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
        return True

    agency = await serve(chunked)
    async with client() as http:
        assert (await http.get(agency.url)).content == b"hello world"
        assert (await http.get(agency.url)).content == b"hello world"
    assert agency.accepted == 1


async def test_close_delimited_body_ends_with_the_connection(serve) -> None:
    """No length and no chunking: the body runs to the close, and the next call reconnects."""
    async def until_close(writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
        await writer.drain()
        writer.write(b"it")
        return False

    agency = await serve(until_close)
    async with client() as http:
        assert (await http.get(agency.url)).content == b"all of it"
        assert (await http.get(agency.url)).content == b"all of it"
    assert agency.accepted == 2


async def test_interim_and_bodiless_responses_keep_the_framing(serve) -> None:
    """100 Continue is skipped; HEAD and 204 carry no body; the connection stays usable."""
    async def various(writer: asyncio.StreamWriter, request: Request) -> bool:
        if request.target == "/interim":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(b"final"))
        elif request.method == "HEAD":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        elif request.target == "/empty":
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            writer.write(reply(b"plain"))
        return True

    agency = await serve(various)
    async with client() as http:
        assert (await http.get(agency.url + "/interim")).content == b"final"
        head = await http.head(agency.url)
        assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "1000"
        assert (await http.get(agency.url + "/empty")).status_code == 204
        assert (await http.get(agency.url)).content == b"plain"
    assert agency.accepted == 1


async def test_connection_close_is_honoured_both_ways(serve) -> None:
    """`Connection: close` from the server, or in our request, ends reuse even if the socket stays open."""
    async def closing(writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(reply(headers=b"Connection: close\r\n" if request.target == "/server" else b""))
        return True  # the server keeps its end open: only the header tells the client

    agency = await serve(closing)
    async with client() as http:
        await http.get(agency.url + "/server")
        await http.get(agency.url + "/client", headers={"Connection": "close"})
        await http.get(agency.url + "/again")
    assert agency.accepted == 3
    assert [len(agency.on(n)) for n in (1, 2, 3)] == [1, 1, 1]


async def test_http_10_reply_is_not_reused(serve) -> None:
    """An HTTP/1.0 reply without keep-alive ends the connection's use."""
    async def old(writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    agency = await serve(old)
    async with client() as http:
        await http.get(agency.url)
        await http.get(agency.url)
    assert agency.accepted == 2


async def test_streamed_request_body_is_sent_chunked(serve) -> None:
    """A body given as an async iterator goes out chunked and arrives whole."""
    async def parts() -> AsyncIterator[bytes]:
        yield b"<a/>"
        yield b"<b/>"

    agency = await serve()
    async with client() as http:
        response = await http.post(agency.url, content=parts())
    assert response.content == b"echo:<a/><b/>"
    assert agency.on(1)[0].headers["transfer-encoding"] == "chunked"


async def test_gzip_reply_is_decoded_by_the_client(serve) -> None:
    """Content-Encoding stays the client's business, as with httpx's own transport."""
    import gzip

    async def zipped(writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(reply(gzip.compress(b"<receipt/>"), headers=b"Content-Encoding: gzip\r\n"))
        return True

    agency = await serve(zipped)
    async with client() as http:
        response = await http.get(agency.url)
    assert response.content == b"<receipt/>"
    assert response.elapsed.total_seconds() >= 0


# -- limits -----------------------------------------------------------------------------------


async def test_concurrent_requests_stay_within_max_connections(serve) -> None:
    """Forty calls at once over four connections: never a fifth, every reply to its caller."""
    agency: Agency

    async def when_all_open(writer: asyncio.StreamWriter, request: Request) -> bool:
        await agency.wait_until(lambda: agency.accepted == 4)
        writer.write(reply(request.body))
        return True

    agency = await serve(when_all_open)
    async with client(connections=4) as http:
        replies = await asyncio.gather(*(http.post(agency.url, content=b"%d" % i) for i in range(40)))
    assert [r.content for r in replies] == [b"%d" % i for i in range(40)]
    assert agency.max_open == 4 and agency.accepted == 4


async def test_pool_timeout_when_no_connection_frees(serve) -> None:
    """With the only connection busy, a second call times out getting one (unreachable, never sent)."""
    gate = asyncio.Event()

    async def held(writer: asyncio.StreamWriter, request: Request) -> bool:
        await gate.wait()
        writer.write(reply())
        return True

    agency = await serve(held)
    async with client(connections=1) as http:
        first = asyncio.create_task(http.get(agency.url))
        await agency.wait_until(lambda: len(agency.requests) == 1)
        # aiohttp bounds the wait for a connection and the connect together: ConnectTimeout.
        with pytest.raises(httpx.ConnectTimeout) as caught:
            await http.get(agency.url, timeout=httpx.Timeout(5.0, pool=0.1))
        assert isinstance(classify_httpx_error(caught.value, CTX), AgencyUnreachable)
        gate.set()
        assert (await first).status_code == 200
        assert (await http.get(agency.url)).status_code == 200  # the slot came back
    assert agency.accepted == 1 and len(agency.requests) == 2


async def test_cancelled_call_gives_its_slot_back(serve) -> None:
    """A caller cancelled mid-exchange drops its connection; the next call gets a new one."""
    gate = asyncio.Event()

    async def first_hangs(writer: asyncio.StreamWriter, request: Request) -> bool:
        if request.target == "/hang":
            await gate.wait()
        writer.write(reply())
        return True

    agency = await serve(first_hangs)
    async with client(connections=1) as http:
        hanging = asyncio.create_task(http.get(agency.url + "/hang"))
        await agency.wait_until(lambda: len(agency.requests) == 1)
        hanging.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hanging
        response = await http.get(agency.url + "/next", timeout=httpx.Timeout(5.0, pool=1.0))
        assert response.status_code == 200
    gate.set()
    assert agency.accepted == 2


# -- failures ---------------------------------------------------------------------------------


async def test_refused_connection_is_connect_error() -> None:
    """Nobody listening: ConnectError, which the adapters read as unreachable."""
    async with client() as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.get(f"http://127.0.0.1:{freed_port()}/soap")
    assert isinstance(classify_httpx_error(caught.value, CTX), AgencyUnreachable)


async def test_connect_outlasting_its_timeout_is_connect_timeout(serve) -> None:
    """A zero connect timeout expires at the first wait: ConnectTimeout, never sent."""
    agency = await serve()
    async with client() as http:
        with pytest.raises(httpx.ConnectTimeout) as caught:
            await http.get(agency.url, timeout=httpx.Timeout(5.0, connect=0.0))
        assert (await http.get(agency.url)).status_code == 200  # the slot came back
    assert isinstance(classify_httpx_error(caught.value, CTX), AgencyUnreachable)
    assert len(agency.requests) == 1


async def test_silent_server_is_read_timeout(serve) -> None:
    """The request went out and no answer came: ReadTimeout, an outcome unknown."""
    gate = asyncio.Event()

    async def silent(writer: asyncio.StreamWriter, request: Request) -> bool:
        await gate.wait()
        return False

    agency = await serve(silent)
    async with client() as http:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await http.post(agency.url, content=b"x", timeout=httpx.Timeout(5.0, read=0.2))
    gate.set()
    assert isinstance(classify_httpx_error(caught.value, CTX), OutcomeUnknown)


async def test_server_not_reading_ends_at_the_call_deadline(serve) -> None:
    """A server that reads nothing stalls a large body: the call ends at its deadline (aiohttp
    has no write timeout), an outcome unknown."""
    gate = asyncio.Event()

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await gate.wait()

    agency = await serve(raw=deaf)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(transport=DeadlineTransport(AiohttpTransport(limits=limits), 0.3),
                                 timeout=TIMEOUT, trust_env=False) as http:
        with pytest.raises(CallDeadlineExceeded) as caught:
            await http.post(agency.url, content=b"x" * (64 * 1024 * 1024))
    gate.set()
    assert isinstance(classify_httpx_error(caught.value, CTX), OutcomeUnknown)


@pytest.mark.parametrize("partial", [
    reply(b"x" * 100)[:-90],  # Content-Length 100, 10 bytes sent
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    b"HTTP/1.1 200 OK\r\nContent-Le",
])
async def test_close_mid_response_is_remote_protocol_error(serve, partial: bytes) -> None:
    """The server closes before the response is complete: RemoteProtocolError, outcome unknown."""
    async def broken(writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(partial)
        return False

    agency = await serve(broken)
    async with client() as http:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await http.post(agency.url, content=b"x")
    assert isinstance(classify_httpx_error(caught.value, CTX), OutcomeUnknown)


@pytest.mark.parametrize("garbage", [
    b"HTTP/1.1 2x0 OK\r\n\r\n",
    b"hello there\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
])
async def test_malformed_response_is_remote_protocol_error(serve, garbage: bytes) -> None:
    """Bytes that are not an HTTP/1.1 response: RemoteProtocolError."""
    async def malformed(writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(garbage)
        return True

    agency = await serve(malformed)
    async with client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(agency.url)


async def test_idle_connection_closed_unseen_is_an_outcome_unknown_then_replaced(serve) -> None:
    """The server closed the idle connection and the loop has not seen it yet: the POST fails as
    an outcome unknown (never resent by the transport), and the next call opens a new connection."""
    gate = asyncio.Event()

    async def then_close(writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(reply(request.body))
        await writer.drain()
        await gate.wait()  # closes once the client holds the connection idle
        return False

    agency = await serve(then_close)
    async with client() as http:
        assert (await http.post(agency.url, content=b"one")).content == b"one"
        gate.set()
        await agency.wait_until(lambda: agency.closed == 1)
        try:  # no loop turn between the server's close and this call, unless the wait gave one
            second = (await http.post(agency.url, content=b"two")).content
        except httpx.RemoteProtocolError as exc:
            assert isinstance(classify_httpx_error(exc, CTX), OutcomeUnknown)
            second = (await http.post(agency.url, content=b"two")).content
        assert second == b"two"
    assert agency.accepted == 2
    assert [r.body for r in agency.on(1)] == [b"one"] and [r.body for r in agency.on(2)] == [b"two"]


async def test_request_dropped_after_sending_is_never_resent(serve) -> None:
    """The server read the POST on a reused connection and closed: an error, not a second POST."""
    async def drop_second(writer: asyncio.StreamWriter, request: Request) -> bool:
        if request.body == b"second":
            return False
        writer.write(reply())
        return True

    agency = await serve(drop_second)
    async with client() as http:
        await http.post(agency.url, content=b"first")
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await http.post(agency.url, content=b"second")
    assert isinstance(classify_httpx_error(caught.value, CTX), OutcomeUnknown)
    assert [r.body for _, r in agency.requests] == [b"first", b"second"]


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_oversize_body_is_refused(serve, framing: str) -> None:
    """A reply over `max_body` is a RemoteProtocolError, whatever its framing."""
    big = b"x" * 2048

    async def large(writer: asyncio.StreamWriter, request: Request) -> bool:
        if framing == "length":
            writer.write(reply(big))
        elif framing == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + b"400\r\n" + big[:1024] + b"\r\n" + b"400\r\n" + big[1024:] + b"\r\n0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + big)
            return False
        return True

    agency = await serve(large)
    async with client(max_body=1024) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="larger|more than"):
            await http.get(agency.url)


async def test_header_injection_is_refused_before_connecting(serve) -> None:
    """CR/LF in a header value: LocalProtocolError, and nothing reaches the server."""
    agency = await serve()
    async with client() as http:
        with pytest.raises(httpx.LocalProtocolError):
            await http.get(agency.url, headers={"X-Reply-To": "a\r\nInjected: 1"})
    assert agency.accepted == 0


async def test_aclose_closes_every_connection(serve) -> None:
    """Closing the client closes its idle connections."""
    agency = await serve()
    http = client()
    await asyncio.gather(*(http.get(agency.url) for _ in range(3)))
    await http.aclose()
    await agency.wait_until(lambda: agency.closed == agency.accepted)
    assert agency.accepted == 3 and agency.open == 0


# -- TLS --------------------------------------------------------------------------------------


def _loopback_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agency.test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "agency.crt", directory / "agency.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_https_with_the_agency_certificate_trusted(serve, tmp_path: Path) -> None:
    """https goes through TLS: trusted, calls succeed on one connection; untrusted, a TLS failure."""
    cert_file, key_file = _loopback_certificate(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert_file, key_file)
    agency = await serve(tls=tls)
    assert agency.url.startswith("https://")
    async with client(verify=ssl.create_default_context(cafile=str(cert_file))) as http:
        assert (await http.post(agency.url, content=b"a")).content == b"echo:a"
        assert (await http.post(agency.url, content=b"b")).content == b"echo:b"
    assert agency.accepted == 1
    async with client() as http:  # the system's trust store does not know this certificate
        with pytest.raises(httpx.ConnectError) as caught:
            await http.post(agency.url, content=b"c")
    assert isinstance(classify_httpx_error(caught.value, CTX), AdapterMisconfigured)


def _tls_contexts() -> int:
    gc.collect()
    return sum(isinstance(thing, ssl.SSLContext) for thing in gc.get_objects())


async def test_agency_sessions_share_one_trust_store(serve) -> None:
    """Each agency has a transport of its own; opening their sessions loads no trust store per agency
    (~0.8 MiB of a worker each): they verify with the system's, loaded once per process."""
    import aiohttp  # noqa: F401  (its own contexts, made when it is imported, are the process's)

    agency = await serve()
    before = _tls_contexts()
    clients = [client() for _ in range(4)]
    for http in clients:
        assert (await http.post(agency.url, content=b"a")).content == b"echo:a"
    assert _tls_contexts() == before
    for http in clients:
        await http.aclose()


def test_bootstrap_gives_agency_clients_the_configured_transport() -> None:
    """`[http] pool` picks the agency clients' transport, aiohttp's by default, each with the limits."""
    from config.settings import HttpSettings
    from wiring.agencies import outgoing_transport

    limits = httpx.Limits(max_connections=3, max_keepalive_connections=3)
    default = outgoing_transport(HttpSettings(), limits)
    assert isinstance(default, AiohttpTransport) and default.limits is limits
    assert isinstance(outgoing_transport(HttpSettings(pool="httpx"), limits), httpx.AsyncHTTPTransport)


async def test_httpx_transport_keeps_the_configured_limits(serve) -> None:
    """With `pool = "httpx"` the agency's concurrency bounds its connections (it was dropped)."""
    from config.settings import AgencySettings, HttpSettings
    from wiring.agencies import agency_http_client

    agency: Agency
    gate = asyncio.Event()

    async def held(writer: asyncio.StreamWriter, request: Request) -> bool:
        await gate.wait()
        writer.write(reply())
        return True

    agency = await serve(held)
    conf = AgencySettings(endpoint=agency.url, concurrency=2)
    async with agency_http_client(conf, 2, HttpSettings(pool="httpx")) as http:
        calls = [asyncio.create_task(http.get(agency.url)) for _ in range(5)]
        await agency.wait_until(lambda: agency.accepted == 2)
        # The others wait for one of the two connections (httpcore's default would open five).
        with pytest.raises(httpx.PoolTimeout):
            await http.get(agency.url, timeout=httpx.Timeout(5.0, pool=0.05))
        assert agency.accepted == 2
        gate.set()
        assert [(await c).status_code for c in calls] == [200] * 5
    assert agency.max_open == 2


async def test_portal_callbacks_go_through_the_agencies_transport_bounded_and_ended_at_their_deadline(
        serve, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notifier's client speaks through `[http] pool` (aiohttp's by default, which a worker has
    loaded already) on the agencies' direct path, without httpx's client around each call; it
    opens no more connections than the notifier's concurrency, and a callback the portal does
    not answer ends at the notifier's deadline as a failure the notifier retries."""
    from adapters.webhook import WebhookFailed, WebhookSender, WebhookTarget
    from config.settings import NotificationSettings, load_settings
    from wiring.notifications import callback_client

    gate = asyncio.Event()

    async def held(writer: asyncio.StreamWriter, request: Request) -> bool:
        await gate.wait()
        writer.write(reply(status=b"204 No Content", body=b""))
        return True

    def client_for(call_deadline: float) -> httpx.AsyncClient:
        notifications = NotificationSettings(concurrency=2, timeout=5.0, call_deadline=call_deadline)
        return callback_client(load_settings(None).model_copy(update={"notifications": notifications}))

    async def through_httpx(*_args: object, **_kwargs: object) -> httpx.Response:
        raise AssertionError("a callback went through httpx's client")

    monkeypatch.setattr(httpx.AsyncClient, "send", through_httpx)
    portal = await serve(held)
    async with client_for(10.0) as http:
        assert isinstance(http._transport.inner, AiohttpTransport)  # type: ignore[attr-defined]
        sender = WebhookSender(http, {"acme": WebhookTarget(portal.url, b"s" * 32)})
        calls = [asyncio.create_task(sender.send("acme", f"event-{n}", b"{}")) for n in range(4)]
        await portal.wait_until(lambda: portal.accepted == 2)
        gate.set()
        assert await asyncio.gather(*calls) == [None] * 4
    assert portal.max_open == 2

    silent = await serve(_never_answers)
    async with client_for(0.3) as http:
        sender = WebhookSender(http, {"acme": WebhookTarget(silent.url, b"s" * 32)})
        with pytest.raises(WebhookFailed, match="CallDeadlineExceeded"):
            await sender.send("acme", "event-late", b"{}")


async def _never_answers(writer: asyncio.StreamWriter, request: Request) -> bool:
    """A portal that reads the callback and never answers it."""
    await asyncio.Event().wait()
    return False
