"""The console's mount: pages, actions and the package's own static files under `/console`."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from api.context import ApiContext
from api.ops.auth import TokenOrSessionGuard
from console.actions import action_routes
from console.pages import page_routes
from console.web import BASE

__all__ = ["console_mount"]


def console_mount(ctx: ApiContext) -> list[Mount]:
    """`/console/...` when the hub has operator accounts, the read model and session logins."""
    guard = ctx.ops_guard
    if guard is None or ctx.ops is None or ctx.operators is None or not isinstance(guard, TokenOrSessionGuard):
        return []
    return [Mount(BASE, routes=[
        Mount("/static", app=StaticFiles(directory=Path(__file__).parent / "static"), name="console-static"),
        *page_routes(),
        *action_routes(),
    ])]
