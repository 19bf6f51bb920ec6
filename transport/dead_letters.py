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
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pika
import pika.exceptions as px

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


def _letter(agency: str, properties: Any, body: bytes) -> DeadLetter:
    try:
        data = json.loads(body)
        job_id, delivery_id = int(data["job_id"]), str(data["delivery_id"])
    except (ValueError, TypeError, KeyError):
        job_id, delivery_id = None, None
    headers = properties.headers or {}
    death = (headers.get("x-death") or [{}])[0]
    at = death.get("time")
    when = at.replace(tzinfo=timezone.utc).isoformat() if isinstance(at, datetime) else None
    reason = death.get("reason") or headers.get("x-first-death-reason")
    reason = reason.decode() if isinstance(reason, bytes) else reason
    return DeadLetter(agency, job_id, delivery_id, reason, when, int(death.get("count") or 0)
                      + int(headers.get("x-delivery-count") or 0))


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
                    method, properties, body = channel.basic_get(queue, auto_ack=False)
                    if method is None:
                        break
                    taken += 1
                    letters.append(_letter(name, properties, body))
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
                    method, properties, body = channel.basic_get(queue, auto_ack=False)
                    if method is None:
                        break
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
                    channel.basic_ack(method.delivery_tag)
                    replayed.append(letter)
                if kept:
                    channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
            return replayed
        except (px.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"replay stopped after {len(replayed)}: {describe(exc)}") from exc
        finally:
            if conn.is_open:
                conn.close()
