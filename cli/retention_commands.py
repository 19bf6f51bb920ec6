"""`hub.py retention run`: purge the payloads of long-settled filings now, from the command line.

`register` adds the group to `hub.py`'s root group; the store is imported only when it runs.
"""

from __future__ import annotations

import sys

import click

from cli.context import settings_of as _settings

__all__ = ["register"]


@click.group()
def retention() -> None:
    """Purge the payloads of filings settled longer ago than `[retention] settled_payload_days`."""


@retention.command("run")
@click.option("--dry-run", is_flag=True, help="List what would be purged; change nothing.")
@click.option("--days", type=click.IntRange(min=1), default=None, help="Override the configured period.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def retention_run(ctx: click.Context, dry_run: bool, days: int | None, as_json: bool) -> None:
    """Purge now (a worker also does it every `[retention] interval_seconds`); each purge is audited."""
    from bootstrap import migrated_engine
    from cli.portal_search import run_retention
    from service.ports import StoreError
    from service.retention import run_retention as purge
    from storage.retention import RetentionStore
    from storage.store import SqlStore

    settings = _settings(ctx)
    conf = settings.retention
    try:
        with migrated_engine(settings, pool_size=2) as engine:
            report = purge(RetentionStore(engine, SqlStore(engine).writer), days or conf.settled_payload_days,
                           batch=conf.batch, dry_run=dry_run)
    except StoreError as exc:
        click.echo(f"the store failed: {exc}", err=True)
        sys.exit(69)
    sys.exit(run_retention(report, click.echo, as_json=as_json))



def register(cli: click.Group) -> None:
    """Add the `retention` group to `hub.py`'s group."""
    cli.add_command(retention)
