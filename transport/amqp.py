"""pika plumbing for the RabbitMQ transport: topology, connection parameters, awaitable channels.

pika's `AsyncioConnection` runs in the process's own event loop; `AmqpConnection` and `AmqpChannel`
turn its callbacks into awaitables and its exceptions into `service.relay.TransportError`s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import pika
import pika.exceptions as px
import structlog
from pika.adapters.asyncio_connection import AsyncioConnection

from service.relay import BrokerUnavailable, TransportError

__all__ = [
    "RPC_TIMEOUT",
    "AmqpChannel",
    "AmqpConnection",
    "Addresses",
    "Topology",
    "amqp_parameters",
    "declare_topology",
    "delete_topology",
    "describe",
    "first",
    "probe",
    "queue_depths",
]

log = structlog.get_logger("crocevia.rabbitmq")

RPC_TIMEOUT = 10.0
#: One broker, or the nodes of a cluster tried in turn (the first that answers is used).
Addresses: TypeAlias = "pika.URLParameters | Sequence[pika.URLParameters]"
#: Reply code of a channel closed because a declaration disagrees with what exists.
_PRECONDITION_FAILED = 406


@dataclass(frozen=True, slots=True)
class Topology:
    """The names and arguments of everything the hub declares on the broker."""

    prefix: str
    agencies: tuple[str, ...]
    delivery_limit: int = 20

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.delivery"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dead"

    def queue(self, agency: str) -> str:
        return f"{self.prefix}.delivery.{agency}"

    def dead_queue(self, agency: str) -> str:
        return f"{self.prefix}.delivery.{agency}.dead"

    def queue_arguments(self, agency: str) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dead_exchange,
            "x-dead-letter-routing-key": agency,
            # Quorum queues count deliveries; past the limit a message is dead-lettered
            # instead of looping (a message that crashes every worker that takes it).
            "x-delivery-limit": self.delivery_limit,
        }


def amqp_parameters(url: str, *, name: str, heartbeat: int = 30, timeout: float = 10.0) -> pika.URLParameters:
    """Connection parameters from an `amqp://` URL: one attempt, bounded waits, a visible name."""
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.retry_delay = 0
    params.heartbeat = heartbeat
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = max(timeout, 30.0)
    params.client_properties = {"connection_name": name, "product": "crocevia"}
    return params


def probe(url: str, *, timeout: float = 5.0) -> None:
    """Open and close one connection (for health checks).

    Raises:
        BrokerUnavailable: the broker cannot be reached or refused the login.
    """
    try:
        pika.BlockingConnection(amqp_parameters(url, name="crocevia-check", timeout=timeout)).close()
    except (px.AMQPError, OSError) as exc:
        raise BrokerUnavailable(f"cannot connect: {describe(exc)}") from exc


def queue_depths(url: str, topology: Topology, *, timeout: float = 5.0) -> dict[str, dict[str, int]]:
    """Per agency: messages ready in its queue, its consumers, and messages dead-lettered.

    Raises:
        BrokerUnavailable: the broker cannot be reached, or a queue is missing (the topology
            is declared by the relay and the workers when they connect).
    """
    try:
        conn = pika.BlockingConnection(amqp_parameters(url, name="crocevia-queues", timeout=timeout))
    except (px.AMQPError, OSError) as exc:
        raise BrokerUnavailable(f"cannot connect: {describe(exc)}") from exc
    try:
        channel = conn.channel()
        depths: dict[str, dict[str, int]] = {}
        for agency in topology.agencies:
            live = channel.queue_declare(topology.queue(agency), passive=True).method
            dead = channel.queue_declare(topology.dead_queue(agency), passive=True).method
            depths[agency] = {"ready": live.message_count, "consumers": live.consumer_count,
                              "dead": dead.message_count}
        return depths
    except (px.AMQPError, OSError) as exc:
        raise BrokerUnavailable(f"cannot read the queues: {describe(exc)}") from exc
    finally:
        if conn.is_open:
            conn.close()


def delete_topology(url: str, topology: Topology, *, timeout: float = 10.0) -> None:
    """Remove everything `topology` declares, messages included (a test's or a benchmark's
    own prefix once it is done; never a deployment that is running).

    Raises:
        BrokerUnavailable: the broker cannot be reached or refused a deletion.
    """
    try:
        conn = pika.BlockingConnection(amqp_parameters(url, name="crocevia-cleanup", timeout=timeout))
    except (px.AMQPError, OSError) as exc:
        raise BrokerUnavailable(f"cannot connect: {describe(exc)}") from exc
    try:
        channel = conn.channel()
        for agency in topology.agencies:
            channel.queue_delete(topology.queue(agency))
            channel.queue_delete(topology.dead_queue(agency))
        channel.exchange_delete(topology.exchange)
        channel.exchange_delete(topology.dead_exchange)
    except (px.AMQPError, OSError) as exc:
        raise BrokerUnavailable(f"cannot delete the topology: {describe(exc)}") from exc
    finally:
        if conn.is_open:
            conn.close()


def describe(reason: object) -> str:
    """A close reason or exception as one line for logs and error messages.

    pika wraps a failed connection attempt three deep (AMQPConnectionError → workflow failed →
    connector phase error) and its outer `str` is empty: the innermost cause says why.
    """
    if not isinstance(reason, BaseException):
        return str(reason)
    root = _root_cause(reason)
    text = str(root).strip() or repr(root)
    return f"{type(root).__name__}: {text.splitlines()[0] if text else ''}"


def _root_cause(exc: BaseException) -> BaseException:
    for _ in range(5):  # pika nests three levels; bounded in case of a cycle
        attempts = getattr(exc, "exceptions", None)  # AMQPConnectionWorkflowFailed: every attempt
        phase = getattr(exc, "exception", None)  # a connector phase error: its cause
        if isinstance(exc, px.AMQPConnectionError) and exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
        elif isinstance(attempts, (tuple, list)) and attempts:  # the last attempt says why
            exc = attempts[-1]
        elif isinstance(phase, BaseException):
            exc = phase
        else:
            break
    return exc


class AmqpChannel:
    """An asynchronous pika channel whose methods can be awaited; a close fails every waiter."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.close_reason: object | None = None
        self.closed = asyncio.Event()
        self._waiters: set[asyncio.Future[Any]] = set()
        raw.add_on_close_callback(self._on_close)

    @property
    def is_open(self) -> bool:
        return self.close_reason is None and self.raw.is_open

    def _on_close(self, _channel: Any, reason: object) -> None:
        self.close_reason = reason
        self.closed.set()
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_exception(_channel_error(reason))

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Send `method` and wait for the broker's answer.

        Raises:
            BrokerUnavailable: the channel or connection closed, or no answer in time.
            TransportError: the broker refused a declaration (arguments differ from what exists).
        """
        if not self.is_open:
            raise _channel_error(self.close_reason or "channel is closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._waiters.add(waiter)

        def answered(frame: Any) -> None:
            if not waiter.done():
                waiter.set_result(frame)

        try:
            getattr(self.raw, method)(*args, callback=answered, **kwargs)
            return await asyncio.wait_for(waiter, RPC_TIMEOUT)
        except TimeoutError:
            raise BrokerUnavailable(f"no answer to {method} in {RPC_TIMEOUT}s") from None
        except px.AMQPError as exc:
            raise BrokerUnavailable(f"{method} failed: {describe(exc)}") from exc
        finally:
            self._waiters.discard(waiter)

    async def until(self, done: asyncio.Future[None], timeout: float) -> None:
        """Wait until a callback resolves `done`, the channel closes or `timeout` seconds pass,
        whichever comes first; the caller looks at its own state to tell which. No task is
        started (the relay waits for its confirms on every pass)."""
        if not self.is_open:
            return
        self._waiters.add(done)
        try:
            await asyncio.wait_for(done, timeout)
        except (TimeoutError, TransportError):
            pass
        finally:
            self._waiters.discard(done)

    def settle(self, tag: int, how: str) -> bool:
        """Ack, requeue (`nack`) or dead-letter (`reject`) one delivery; False if it cannot be."""
        if not self.is_open:
            return False  # the broker already took the message back: it will be redelivered
        try:
            if how == "ack":
                self.raw.basic_ack(tag)
            elif how == "nack":
                self.raw.basic_nack(tag, requeue=True)
            else:
                self.raw.basic_reject(tag, requeue=False)
        except px.AMQPError as exc:
            log.warning("message_settle_failed", how=how, error=describe(exc))
            return False
        return True


def _channel_error(reason: object) -> TransportError:
    if isinstance(reason, px.ChannelClosedByBroker) and reason.reply_code == _PRECONDITION_FAILED:
        return TransportError(f"the broker refused a declaration: {reason.reply_text}")
    return BrokerUnavailable(f"channel closed: {describe(reason)}")


class AmqpConnection:
    """One pika `AsyncioConnection` in the running event loop."""

    def __init__(self) -> None:
        self.raw: Any = None
        self.closed = asyncio.Event()
        self.close_reason: object | None = None
        self._waiters: set[asyncio.Future[Any]] = set()

    @classmethod
    async def open(cls, addresses: Addresses) -> AmqpConnection:
        """Connect to the first of `addresses` that answers (a cluster's nodes, in turn).

        Raises:
            BrokerUnavailable: no address could be reached; the message says why the last failed.
        """
        candidates = [addresses] if isinstance(addresses, pika.URLParameters) else list(addresses)
        if not candidates:
            raise BrokerUnavailable("no broker address configured")
        for candidate in candidates[:-1]:
            try:
                return await cls._open_one(candidate)
            except BrokerUnavailable as exc:
                log.info("broker_node_unreachable", host=candidate.host, port=candidate.port, error=str(exc))
        return await cls._open_one(candidates[-1])

    @classmethod
    async def _open_one(cls, parameters: pika.URLParameters) -> AmqpConnection:
        self = cls()
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()

        def on_open(_conn: Any) -> None:
            if not opened.done():
                opened.set_result(None)

        def on_open_error(_conn: Any, exc: object) -> None:
            self.closed.set()
            if not opened.done():
                opened.set_exception(BrokerUnavailable(f"cannot connect: {describe(exc)}"))

        try:
            self.raw = AsyncioConnection(
                parameters,
                on_open_callback=on_open,
                on_open_error_callback=on_open_error,
                on_close_callback=self._on_close,
                custom_ioloop=loop,
            )
        except (px.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"cannot connect: {describe(exc)}") from exc
        try:
            await asyncio.wait_for(opened, parameters.stack_timeout or RPC_TIMEOUT)
        except TimeoutError:
            await self.close()
            raise BrokerUnavailable("timed out connecting to the broker") from None
        except BaseException:
            await self.close()
            raise
        return self

    def _on_close(self, _conn: Any, reason: object) -> None:
        self.close_reason = reason
        self.closed.set()
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_exception(BrokerUnavailable(f"connection closed: {describe(reason)}"))

    async def channel(self) -> AmqpChannel:
        """Open a channel, or raise `BrokerUnavailable`."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._waiters.add(waiter)

        def on_open(raw: Any) -> None:
            if not waiter.done():
                waiter.set_result(raw)

        try:
            if self.closed.is_set():
                raise BrokerUnavailable("connection closed")
            self.raw.channel(on_open_callback=on_open)
            return AmqpChannel(await asyncio.wait_for(waiter, RPC_TIMEOUT))
        except TimeoutError:
            raise BrokerUnavailable("no answer to channel.open") from None
        except px.AMQPError as exc:
            raise BrokerUnavailable(f"channel.open failed: {describe(exc)}") from exc
        finally:
            self._waiters.discard(waiter)

    async def close(self) -> None:
        """Close politely (pending acks are flushed first); never raises."""
        if self.raw is None or self.closed.is_set():
            return
        try:
            if self.raw.is_open:
                self.raw.close()
            await asyncio.wait_for(self.closed.wait(), RPC_TIMEOUT)
        except (px.AMQPError, TimeoutError) as exc:
            log.warning("broker_close_failed", error=describe(exc))


async def declare_topology(channel: AmqpChannel, topology: Topology) -> None:
    """Declare exchanges, queues and bindings; a no-op where they already exist as declared.

    Raises:
        BrokerUnavailable: the connection failed meanwhile.
        TransportError: something exists with other arguments (e.g. a classic queue by that name).
    """
    await channel.call("exchange_declare", exchange=topology.exchange, exchange_type="direct", durable=True)
    await channel.call("exchange_declare", exchange=topology.dead_exchange, exchange_type="direct", durable=True)
    for agency in topology.agencies:
        dead = topology.dead_queue(agency)
        await channel.call("queue_declare", queue=dead, durable=True, arguments={"x-queue-type": "quorum"})
        await channel.call("queue_bind", queue=dead, exchange=topology.dead_exchange, routing_key=agency)
        queue = topology.queue(agency)
        await channel.call("queue_declare", queue=queue, durable=True, arguments=topology.queue_arguments(agency))
        await channel.call("queue_bind", queue=queue, exchange=topology.exchange, routing_key=agency)


async def first(*awaitables: Any) -> None:
    """Wait until the first of `awaitables` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
