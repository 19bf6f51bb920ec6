"""The notifier that tells portals about their filings' events, signed with each portal's secret."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from adapters.webhook import WebhookSender, WebhookTarget
from config.settings import Settings
from security.secrets import callback_secret
from service.notifier import EventNotifier, EventStore
from service.schedule import SchedulePolicy
from wiring.agencies import outgoing_client
from wiring.memory import client_sending_nothing

__all__ = ["build_notifier", "callback_client"]


def callback_client(settings: Settings) -> httpx.AsyncClient:
    """The client that POSTs to the portals' callback addresses, built as the agencies' are:
    the transport of `[http] pool` (aiohttp's by default, already loaded in a worker with its one
    trust store, where httpx's own would load httpcore, h11 and a store of its own, ~4 MiB), on
    it the direct path that skips httpx's client (half of a callback's CPU went to building and
    sending it through httpx), as many connections as the notifier's concurrency, each callback
    ended at its deadline."""
    n = settings.notifications
    return outgoing_client(settings.http, n.concurrency, httpx.Timeout(n.timeout), n.call_deadline)


def build_notifier(settings: Settings, store: EventStore,
                   clock: Callable[[], float]) -> tuple[EventNotifier, httpx.AsyncClient]:
    """The notifier for every portal with a `callback_url`, and its HTTP client (the caller closes it).

    Raises:
        ValueError: a portal has a callback address but no secret to sign with.
    """
    n = settings.notifications
    targets = {}
    for portal, conf in settings.portals.items():
        if not conf.callback_url:
            continue
        inline = conf.callback_secret.get_secret_value() if conf.callback_secret is not None else None
        file = settings.path(conf.callback_secret_file) if conf.callback_secret_file else None
        secret = callback_secret(inline, file)
        if secret is None:
            raise ValueError(f"portal {portal!r} has a callback_url but no callback_secret(_file)")
        targets[portal] = WebhookTarget(conf.callback_url, secret, conf.callback_concurrency)
    client = callback_client(settings) if targets else client_sending_nothing(
        "notifications without a portal to call back")
    notifier = EventNotifier(
        store=store,
        sender=WebhookSender(client, targets),
        backoff=SchedulePolicy(initial_delay=n.initial_delay, max_delay=n.max_delay, jitter=n.jitter),
        max_age_seconds=n.max_age_seconds,
        concurrency=n.concurrency,
        lease_seconds=n.lease_seconds,
        poll_interval=n.poll_interval,
        max_poll_interval=n.max_poll_interval,
        clock=clock,
    )
    return notifier, client
