"""What `hub.py`'s root group hands every command: the settings it loaded (`--config`)."""

from __future__ import annotations

import click

from config.settings import Settings

__all__ = ["settings_of"]


def settings_of(ctx: click.Context) -> Settings:
    """The settings the root group put on the context, for a command registered from any cli/ module."""
    settings: Settings = ctx.obj["settings"]
    return settings
