"""RabbitMQ's side of the hub from `[transport]`: topology, connection parameters, the relay's
publisher and the dead-letter queues.

`transport.rabbitmq` (and so pika) is imported only when a builder runs: a hub on the embedded
queue never loads it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from config.settings import Settings
from service.relay import OutboxRelay, RelayStore

if TYPE_CHECKING:
    from transport.dead_letters import RabbitDeadLetters
    from transport.rabbitmq import RabbitJobSource, Topology

__all__ = ["build_relay", "dead_letters", "job_source", "topology", "uses_rabbitmq"]


def uses_rabbitmq(settings: Settings) -> bool:
    """Whether jobs go through RabbitMQ (else the embedded database queue)."""
    return settings.transport.kind == "rabbitmq"


def topology(settings: Settings, agencies: Iterable[str]) -> Topology:
    """The exchanges and queues of `agencies` under `[transport] prefix`."""
    from transport.rabbitmq import Topology

    t = settings.transport
    return Topology(prefix=t.prefix, agencies=tuple(sorted(agencies)), delivery_limit=t.delivery_limit)


def _connection_name(role: str) -> str:
    """How this process shows in RabbitMQ's management view: its role and pid."""
    return f"crocevia-{role}-{os.getpid()}"


def _addresses(settings: Settings, role: str) -> list[Any]:
    """Connection parameters of `[transport] url`, then of each of `urls` (a cluster's nodes)."""
    from transport.rabbitmq import amqp_parameters

    t = settings.transport
    return [amqp_parameters(url.get_secret_value(), name=_connection_name(role), heartbeat=t.heartbeat)
            for url in (t.url, *t.urls)]


def job_source(settings: Settings, store: Any, agencies: Iterable[str],
               prefetch: Mapping[str, int]) -> RabbitJobSource:
    """A worker's jobs from the quorum queues of `agencies`, `prefetch[agency]` at a time."""
    from transport.rabbitmq import RabbitJobSource

    t = settings.transport
    return RabbitJobSource(
        parameters=_addresses(settings, "worker"),
        topology=topology(settings, agencies), prefetch=prefetch, store=store,
        lease_seconds=settings.worker.lease_seconds, reconnect_initial=t.reconnect_initial,
        reconnect_max=t.reconnect_max,
    )


def dead_letters(settings: Settings, agencies: Iterable[str]) -> RabbitDeadLetters | None:
    """The dead-letter queues operators inspect and replay, with RabbitMQ; None otherwise."""
    if not uses_rabbitmq(settings):
        return None
    from transport.dead_letters import RabbitDeadLetters

    return RabbitDeadLetters(settings.transport.url.get_secret_value(), topology(settings, agencies))


def build_relay(settings: Settings, store: RelayStore, agencies: Iterable[str]) -> OutboxRelay:
    """The relay that publishes committed outbox rows of `agencies` to RabbitMQ when due.

    Raises:
        ValueError: the hub runs on the embedded queue, which needs no relay.
    """
    from transport.rabbitmq import RabbitPublisher

    if not uses_rabbitmq(settings):
        raise ValueError("the relay runs with transport.kind = 'rabbitmq' (the embedded queue needs none)")
    t, r = settings.transport, settings.relay
    return OutboxRelay(
        store=store,
        publisher=RabbitPublisher(
            _addresses(settings, "relay"), topology(settings, agencies), confirm_timeout=t.confirm_timeout),
        batch_size=r.batch_size,
        lease_seconds=r.lease_seconds,
        poll_interval=r.poll_interval,
        max_poll_interval=r.max_poll_interval,
        backoff_initial=t.reconnect_initial,
        backoff_max=t.reconnect_max,
        hold_before_mark=r.hold_before_mark,
        gather=r.gather_interval,
    )
