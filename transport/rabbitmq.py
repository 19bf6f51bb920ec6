"""The RabbitMQ transport over pika: topology, the relay's confirming publisher, the workers' job source.

Topology (declared idempotently by every process that connects, on every connect):

    <prefix>.delivery        direct exchange, durable; routing key = agency
      └─ <prefix>.delivery.<agency>        quorum queue, x-delivery-limit, dead-letters to ↓
    <prefix>.dead            direct exchange, durable; routing key = agency
      └─ <prefix>.delivery.<agency>.dead   quorum queue: what operations must look at

There is no delay queue: a retry is an outbox row with a later `available_at`, published by
the relay when due, so a long wait never sits in an unacknowledged message (RabbitMQ's
consumer timeout would cut it; dramatiq issue #827).

pika's `AsyncioConnection` runs in the process's own event loop, so publishing, confirms,
consuming and acks all happen on one thread and need no marshalling. pika's exceptions stop
in `transport/` (here and in `transport/amqp.py`): callers see
`service.relay.TransportError` and its subclasses only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pika
import pika.exceptions as px
import pika.spec
import structlog

from service.ports import ClaimedJob, Completion
from service.relay import BrokerUnavailable, OutboxJob, TransportError
from service.store_ports import JobStore
from transport.amqp import (
    Addresses,
    AmqpChannel,
    AmqpConnection,
    Topology,
    amqp_parameters,
    declare_topology,
    describe,
    first,
    probe,
    queue_depths,
)

__all__ = [
    "RabbitJobSource",
    "RabbitPublisher",
    "Topology",
    "amqp_parameters",
    "declare_topology",
    "probe",
    "queue_depths",
]

log = structlog.get_logger("crocevia.rabbitmq")

#: Bumped if the message body ever changes shape; consumers refuse what they do not know.
MESSAGE_TYPE = "crocevia.delivery.v1"


# ---------------------------------------------------------------------------------------------
# The relay's publisher
# ---------------------------------------------------------------------------------------------


class RabbitPublisher:
    """Publishes outbox jobs persistently with `mandatory` and waits for publisher confirms.

    A batch is written in one go and confirmed asynchronously (the broker acks several
    messages at once), which is many times faster than waiting for each confirm in turn.
    """

    def __init__(self, parameters: Addresses, topology: Topology, *, confirm_timeout: float = 30.0) -> None:
        self._params = parameters
        self._topology = topology
        self._confirm_timeout = confirm_timeout
        self._conn: AmqpConnection | None = None
        self._channel: AmqpChannel | None = None
        self._next_tag = 1
        self._unconfirmed: dict[int, int] = {}  # delivery tag -> job id
        self._confirmed: list[int] = []
        self._refused: list[int] = []
        self._returned: set[int] = set()
        self._settled: asyncio.Future[None] | None = None

    async def _ensure(self) -> AmqpChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        await self._drop()
        conn = await AmqpConnection.open(self._params)
        try:
            channel = await conn.channel()
            await declare_topology(channel, self._topology)
            channel.raw.add_on_return_callback(self._on_return)
            await channel.call("confirm_delivery", ack_nack_callback=self._on_confirm)
        except BaseException:
            await conn.close()
            raise
        self._conn, self._channel, self._next_tag = conn, channel, 1
        log.info("publisher_connected", exchange=self._topology.exchange)
        return channel

    async def _drop(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            await conn.close()

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        # RabbitMQ sends basic.return before the confirm of the same message (mandatory, and
        # no queue bound for its routing key): the confirm alone would say "ok".
        try:
            self._returned.add(int(properties.message_id))
        except (TypeError, ValueError):
            pass
        log.error("message_unroutable", routing_key=method.routing_key, reply_text=method.reply_text)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        tags = (
            [t for t in self._unconfirmed if t <= method.delivery_tag] if method.multiple else [method.delivery_tag]
        )
        for tag in tags:
            job_id = self._unconfirmed.pop(tag, None)
            if job_id is None:
                continue
            if ok and job_id not in self._returned:
                self._confirmed.append(job_id)
            else:
                self._refused.append(job_id)
        if not self._unconfirmed and self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    async def publish(self, jobs: Sequence[OutboxJob]) -> list[int]:
        """Publish `jobs` and return the ids the broker confirmed.

        Raises:
            BrokerUnavailable: no connection, or it was lost before every confirm arrived.
        """
        if not jobs:
            return []
        channel = await self._ensure()
        self._confirmed, self._refused, self._returned = [], [], set()
        self._settled = asyncio.get_running_loop().create_future()
        now = int(time.time())
        try:
            for job in jobs:
                body = json.dumps({"job_id": job.job_id, "delivery_id": job.delivery_id, "agency": job.agency})
                properties = pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=str(job.job_id),
                    type=MESSAGE_TYPE,
                    timestamp=now,
                )
                self._unconfirmed[self._next_tag] = job.job_id
                self._next_tag += 1
                channel.raw.basic_publish(
                    self._topology.exchange, job.agency, body.encode(), properties, mandatory=True
                )
        except px.AMQPError as exc:
            await self._drop()
            self._unconfirmed.clear()
            raise BrokerUnavailable(f"publish failed: {describe(exc)}") from exc
        if self._unconfirmed:
            await channel.until(self._settled, self._confirm_timeout)
        if self._unconfirmed:
            missing = len(self._unconfirmed)
            self._unconfirmed.clear()
            await self._drop()
            raise BrokerUnavailable(f"{missing} of {len(jobs)} messages not confirmed")
        if self._refused:
            log.error("messages_refused", count=len(self._refused), job_ids=self._refused[:20])
            if any(job_id not in self._returned for job_id in self._refused):
                # Nacked, not returned: after a quorum queue's leader dies, a channel can be
                # nacked on every publish until it is reopened; the relay retries on a new one.
                await self._drop()
        return list(self._confirmed)

    async def close(self) -> None:
        await self._drop()


# ---------------------------------------------------------------------------------------------
# The workers' job source
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Delivery:
    agency: str
    channel: AmqpChannel
    tag: int
    job_id: int
    delivery_id: str
    returned: int = 0  # times the broker handed it out before (quorum queues' x-delivery-count)
    deadline: float | None = None  # lease: requeued if no outcome arrives by then


class RabbitJobSource:
    """A `service.worker.JobSource` over one quorum queue per agency.

    Each agency has its own channel with prefetch = its concurrency, so the broker never hands
    a worker more of one agency's jobs than it can run, and a slow agency fills only its own
    window. A job is acknowledged only after its outcome is committed; a job that is already
    done is acknowledged without sending; an unreadable message or an unknown job is rejected
    into the dead-letter queue. A job handed out but never completed (a crashed pass) is
    requeued after `lease_seconds`, which counts against the queue's delivery limit.
    """

    def __init__(
        self,
        *,
        parameters: Addresses,
        topology: Topology,
        prefetch: Mapping[str, int],
        store: JobStore,
        lease_seconds: float = 60.0,
        reconnect_initial: float = 0.2,
        reconnect_max: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._params = parameters
        self._topology = topology
        self._prefetch = dict(prefetch)
        self._store = store
        self._lease = lease_seconds
        self._reconnect = (reconnect_initial, reconnect_max)
        self._clock = clock
        self._buffers: dict[str, deque[_Delivery]] = {a: deque() for a in self._prefetch}
        self._unloaded: list[_Delivery] = []  # taken from the buffers, not yet found in the store
        self._active: dict[int, _Delivery] = {}  # handed to the worker, not yet acknowledged
        self._parked: dict[int, list[_Delivery]] = {}  # copies of an active job, settled with it
        self._listener: Callable[[], None] | None = None
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def listen(self, callback: Callable[[], None]) -> None:
        """Call `callback` (in the event loop) whenever a message arrives."""
        self._listener = callback

    async def start(self) -> asyncio.Task[None]:
        """Start connecting and consuming in the background (reconnecting with backoff).

        Returns:
            The consuming task, for the process's supervisor to watch.
        """
        self._task = asyncio.create_task(self._run(), name="rabbitmq-consumer")
        return self._task

    async def close(self) -> None:
        """Stop consuming; unacknowledged messages go back to their queues."""
        self._closing.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        initial, ceiling = self._reconnect
        backoff = initial
        while not self._closing.is_set():
            conn: AmqpConnection | None = None
            try:
                conn = await AmqpConnection.open(self._params)
                setup = await conn.channel()
                await declare_topology(setup, self._topology)
                for agency, prefetch in self._prefetch.items():
                    channel = await conn.channel()
                    await channel.call("basic_qos", prefetch_count=prefetch)
                    await channel.call(
                        "basic_consume",
                        self._topology.queue(agency),
                        on_message_callback=partial(self._on_message, agency, channel),
                    )
                log.info("consumer_connected", agencies=sorted(self._prefetch), prefetch=self._prefetch)
                self.connected.set()
                backoff = initial
                await first(conn.closed.wait(), self._closing.wait())
                if conn.closed.is_set():
                    log.warning("broker_connection_lost", reason=describe(conn.close_reason))
            except TransportError as exc:
                log.warning("broker_unavailable", error=str(exc), retry_in=round(backoff, 2))
            finally:
                self.connected.clear()
                self._drop_stale()
                if conn is not None:
                    await conn.close()
            if self._closing.is_set():
                break
            await first(asyncio.sleep(backoff * (0.5 + random.random() / 2)), self._closing.wait())
            backoff = min(ceiling, backoff * 2)

    def _on_message(self, agency: str, channel: AmqpChannel, _raw: Any, method: Any, properties: Any, body: bytes) -> None:
        try:
            if properties.type not in (None, MESSAGE_TYPE):
                raise ValueError(f"unknown message type {properties.type!r}")
            data = json.loads(body)
            returned = int((properties.headers or {}).get("x-delivery-count") or 0)
            delivery = _Delivery(agency, channel, method.delivery_tag, int(data["job_id"]),
                                 str(data["delivery_id"]), returned)
            if data.get("agency") != agency:
                raise ValueError(f"message for {data.get('agency')!r} in the queue of {agency!r}")
        except (ValueError, TypeError, KeyError) as exc:
            log.error("message_dead_lettered", agency=agency, reason=f"unreadable: {exc}", body=body[:200])
            channel.settle(method.delivery_tag, "reject")
            return
        self._buffers[agency].append(delivery)
        if self._listener is not None:
            self._listener()

    def _drop_stale(self) -> None:
        """Forget buffered messages of a lost channel: the broker delivers them again."""
        for agency, buffer in self._buffers.items():
            self._buffers[agency] = deque(d for d in buffer if d.channel.is_open)
        self._unloaded = [d for d in self._unloaded if d.channel.is_open]

    def _settle(self, delivery: _Delivery, how: str) -> None:
        delivery.channel.settle(delivery.tag, how)
        for copy in self._parked.pop(delivery.job_id, []):
            copy.channel.settle(copy.tag, how)

    def _expire_leases(self) -> None:
        now = self._clock()
        for job_id, delivery in list(self._active.items()):
            if delivery.deadline is not None and delivery.deadline < now:
                log.warning("job_lease_expired", job_id=job_id, agency=delivery.agency)
                del self._active[job_id]
                self._settle(delivery, "nack")

    async def claim(self, owner: str, agencies: Sequence[str], limit: int) -> list[ClaimedJob]:
        """Hand over up to `limit` received jobs of `agencies`, loaded from the store.

        Raises:
            StoreUnavailable: the store is away; the messages are kept and offered again next time.
            Exception: any other failure of the store, likewise.
        """
        self._expire_leases()
        picked, self._unloaded = [d for d in self._unloaded if d.channel.is_open], []
        taken = {d.job_id for d in picked}
        buffers = [self._buffers[a] for a in agencies if a in self._buffers]
        while len(picked) < limit and any(buffers):
            for buffer in buffers:
                if not buffer or len(picked) >= limit:
                    continue
                delivery = buffer.popleft()
                if not delivery.channel.is_open:
                    continue
                if delivery.job_id in self._active or delivery.job_id in taken:
                    # The same job twice (published again, or redelivered while still running
                    # here): send it once, settle this copy together with the first.
                    self._parked.setdefault(delivery.job_id, []).append(delivery)
                    continue
                taken.add(delivery.job_id)
                picked.append(delivery)
        if not picked:
            return []
        try:
            jobs, done = await asyncio.to_thread(self._store.load_jobs, [d.job_id for d in picked])
        except BaseException:
            self._unloaded = picked
            raise
        by_id = {job.job_id: job for job in jobs}
        deadline = self._clock() + self._lease
        out: list[ClaimedJob] = []
        for delivery in picked:
            job = by_id.get(delivery.job_id)
            if delivery.job_id in done:
                log.debug("job_already_done", job_id=delivery.job_id, agency=delivery.agency)
                self._settle(delivery, "ack")
            elif job is None or job.agency != delivery.agency or job.delivery_id != delivery.delivery_id:
                log.error("message_dead_lettered", job_id=delivery.job_id, agency=delivery.agency,
                          reason="no such job in the store" if job is None else "job does not match the message")
                self._settle(delivery, "reject")
            else:
                delivery.deadline = deadline
                self._active[delivery.job_id] = delivery
                out.append(dataclasses.replace(job, handed_out=delivery.returned) if delivery.returned else job)
        return out

    async def complete(self, completions: Sequence[Completion]) -> None:
        """Commit the outcomes, then acknowledge their messages (never before the commit).

        Raises:
            StoreUnavailable: the store is away; nothing was acknowledged, the caller retries.
            Exception: the store refused the batch otherwise; nothing was acknowledged.
        """
        own = [c for c in self._own(completions) if not c.stale]
        held = {id(c) for c in own}
        for c in own:
            delivery = self._active.get(c.job.job_id)
            if delivery is not None:
                delivery.deadline = None  # the outcome is known: only the commit is pending
        # A stale pass's calls were made all the same: the store counts them (only them).
        stale = [dataclasses.replace(c, stale=True) for c in completions if id(c) not in held and c.attempts]
        started = time.perf_counter()
        await asyncio.to_thread(self._store.complete_jobs, own + stale)
        log.debug("outcomes_committed", count=len(own), ms=round((time.perf_counter() - started) * 1000, 1))
        for c in own:
            delivery = self._active.pop(c.job.job_id, None)
            if delivery is not None:
                self._settle(delivery, "ack")

    def _own(self, completions: Sequence[Completion]) -> list[Completion]:
        """The completions whose message this worker still holds. A pass that outlived its
        lease had its message requeued (and maybe handed out again): its outcome is dropped,
        so it can neither close the newer pass's job nor acknowledge its message."""
        own = []
        for c in completions:
            delivery = self._active.get(c.job.job_id)
            if delivery is None or delivery.returned != c.job.handed_out:
                log.warning("stale_pass_dropped", job_id=c.job.job_id, agency=c.job.agency,
                            delivery_id=c.job.delivery_id, reason="lease_expired", state=c.new_state)
                continue
            own.append(c)
        return own
