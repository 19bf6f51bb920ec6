"""Operators' view of RabbitMQ's dead-letter queues: list what lies there, replay it.

Each call opens its own short blocking connection (an operator's request, not the hot path)
and runs in a worker thread. Listing takes messages without acknowledging them and gives
them back (`nack` with requeue) so nothing moves; a replay publishes a copy to the agency's
delivery queue, waits for the broker's confirm, and only then acknowledges the dead one: a
lost connection in between leaves a duplicate, never a loss (a worker acknowledges a job that
is already done without sending it).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import pika
import pika.exceptions as px
from pika.adapters.blocking_connection import BlockingChannel

from domain.timestamps import rfc3339
from service.relay import BrokerUnavailable
from transport.amqp import Topology, amqp_parameters, describe

__all__ = ["DeadLetter", "RabbitDeadLetters"]

#: The most messages one listing or replay takes from one queue.
MAX_BATCH = 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered message as operators see it (never the whole body: it holds ids only)."""

    agency: str
    job_id: int | None
    delivery_id: str | None
    reason: str | None  # why RabbitMQ dead-lettered it (x-death: rejected, delivery_limit, ...)
    dead_lettered_at: str | None
    deliveries: int  # how often the broker handed it out before it died

    def to_json(self) -> dict[str, Any]:
        return {"agency": self.agency, "jobId": self.job_id, "deliveryId": self.delivery_id,
                "reason": self.reason, "deadLetteredAt": self.dead_lettered_at, "deliveries": self.deliveries}


class _Taken(NamedTuple):
    """One message taken from a queue and not acknowledged yet."""

    tag: int
    properties: pika.BasicProperties
    body: bytes


def _take(channel: BlockingChannel, queue: str) -> _Taken | None:
    """The next message of `queue`, unacknowledged; None when the queue is empty."""
    method, properties, body = channel.basic_get(queue, auto_ack=False)
    if method is None or properties is None or body is None:
        return None
    # The broker's Basic.GetOk always carries a tag; pika declares the field optional.
    assert method.delivery_tag is not None
    return _Taken(method.delivery_tag, properties, body)


def _letter(agency: str, properties: pika.BasicProperties, body: bytes) -> DeadLetter:
    try:
        data = json.loads(body)
        job_id, delivery_id = int(data["job_id"]), str(data["delivery_id"])
    except (ValueError, TypeError, KeyError):
        job_id, delivery_id = None, None
    headers: Mapping[str, object] = properties.headers or {}
    death = _latest_death(headers)
    at = death.get("time")
    when = rfc3339(at) if isinstance(at, datetime) else None
    reason = _text(death.get("reason") or headers.get("x-first-death-reason"))
    return DeadLetter(agency, job_id, delivery_id, reason, when, _count(death.get("count"))
                      + _count(headers.get("x-delivery-count")))


# AMQP header tables hold values of many types; these read the ones RabbitMQ documents.

def _latest_death(headers: Mapping[str, object]) -> Mapping[str, object]:
    """The first `x-death` entry (RabbitMQ puts the latest first); empty when there is none."""
    deaths = headers.get("x-death")
    latest = deaths[0] if isinstance(deaths, list) and deaths else None
    return latest if isinstance(latest, Mapping) else {}


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None


def _count(value: object) -> int:
    return int(value) if value and isinstance(value, (int, str, bytes)) else 0


class RabbitDeadLetters:
    """The dead-letter queues of `topology`'s agencies on the broker at `url`."""

    def __init__(self, url: str, topology: Topology, *, timeout: float = 5.0) -> None:
        self._url = url
        self._topology = topology
        self._timeout = timeout

    def _connect(self) -> pika.BlockingConnection:
        try:
            return pika.BlockingConnection(amqp_parameters(self._url, name="crocevia-dead-letters",
                                                           timeout=self._timeout))
        except (px.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"cannot connect: {describe(exc)}") from exc

    def _agencies(self, agency: str | None) -> tuple[str, ...]:
        return (agency,) if agency is not None else self._topology.agencies

    def list(self, agency: str | None = None, limit: int = 100) -> tuple[dict[str, int], list[DeadLetter]]:
        """Per agency the number of dead letters, and the first `limit` of them (nothing moves).

        Raises:
            BrokerUnavailable: the broker cannot be reached or a queue is missing.
        """
        limit = max(0, min(limit, MAX_BATCH))
        conn = self._connect()
        counts: dict[str, int] = {}
        letters: list[DeadLetter] = []
        try:
            channel = conn.channel()
            for name in self._agencies(agency):
                queue = self._topology.dead_queue(name)
                counts[name] = channel.queue_declare(queue, passive=True).method.message_count
                taken = 0
                while len(letters) < limit and taken < counts[name]:
                    got = _take(channel, queue)
                    if got is None:
                        break
                    taken += 1
                    letters.append(_letter(name, got.properties, got.body))
                if taken:
                    # Give them all back, in one go: listing changes nothing.
                    channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
            return counts, letters
        except (px.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read the dead-letter queues: {describe(exc)}") from exc
        finally:
            if conn.is_open:
                conn.close()

    def replay(self, agency: str | None = None, limit: int = 100,
               job_ids: frozenset[int] | None = None) -> builtins.list[DeadLetter]:
        """Move up to `limit` dead letters (only `job_ids`, if given) back to their agency's
        delivery queue; the others stay where they are.

        Returns:
            The messages replayed.

        Raises:
            BrokerUnavailable: the broker cannot be reached, or refused a publish (what was
                confirmed before stays replayed).
        """
        limit = max(0, min(limit, MAX_BATCH))
        conn = self._connect()
        replayed: list[DeadLetter] = []
        try:
            channel = conn.channel()
            channel.confirm_delivery()
            for name in self._agencies(agency):
                queue = self._topology.dead_queue(name)
                waiting = channel.queue_declare(queue, passive=True).method.message_count
                kept = False
                for _ in range(min(waiting, MAX_BATCH)):
                    if len(replayed) >= limit:
                        break
                    got = _take(channel, queue)
                    if got is None:
                        break
                    tag, properties, body = got
                    letter = _letter(name, properties, body)
                    if job_ids is not None and letter.job_id not in job_ids:
                        kept = True
                        continue
                    # A fresh message: the delivery count starts again, x-death is dropped.
                    copy = pika.BasicProperties(
                        content_type=properties.content_type, delivery_mode=pika.DeliveryMode.Persistent,
                        message_id=properties.message_id, type=properties.type, timestamp=properties.timestamp,
                        headers={"x-crocevia-replayed": 1},
                    )
                    channel.basic_publish(self._topology.exchange, name, body, copy, mandatory=True)
                    channel.basic_ack(tag)
                    replayed.append(letter)
                if kept:
                    channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
            return replayed
        except (px.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"replay stopped after {len(replayed)}: {describe(exc)}") from exc
        finally:
            if conn.is_open:
                conn.close()
