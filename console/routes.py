"""The console's mount: pages, actions and the package's own static files under `/console`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from api.ops.auth import OperatorGuard, TokenOrSessionGuard
from console.actions import action_routes
from console.pages import page_routes
from console.web import BASE, Console

if TYPE_CHECKING:
    from api.app import ApiContext

__all__ = ["console_mount"]


def console_mount(ctx: ApiContext, guard: OperatorGuard | None) -> list[Mount]:
    """`/console/...` when the hub has operator accounts, the read model and session logins."""
    if guard is None or ctx.ops is None or ctx.operators is None or not isinstance(guard, TokenOrSessionGuard):
        return []
    console = Console(guard)
    return [Mount(BASE, routes=[
        Mount("/static", app=StaticFiles(directory=Path(__file__).parent / "static"), name="console-static"),
        *page_routes(ctx, console),
        *action_routes(ctx, console),
    ])]
