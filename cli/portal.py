"""What every portal command shares: building the signed client from `--url/--portal/--user/
--auth`, and ending any failure in ONE line on stderr with the portal side's exit code.

The exit codes are the operators' read commands' (cli/ops_client.py, sysexits.h), so that a
command both serve (`filings search`, `resend`) ends the same way for either caller, plus two a
portal needs of its own:

    0 done; 1 not found (404); 64 the request or the command line was wrong (400, 422, a bad
    --user); 69 the hub unreachable, too slow, or unavailable (502-504); 70 anything else the hub
    answered (409, 412, 500 ...); 73 the output file cannot be written; 75 a --wait/--follow ran
    out before the filing settled; 77 refused (401, 403); 78 an unknown --portal or its key file
    missing or unreadable.

(Click's own usage errors, an unknown option or a missing argument, keep Click's exit 2.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import click
import orjson

from cli.ops_client import (EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_SOFTWARE, EXIT_UNAVAILABLE, EXIT_USAGE, exit_code_for,
                            hub_url)
from config.settings import Settings
from domain.identity import User

# httpx and the signed client (jwt, cryptography, lxml) load when a command talks to the hub,
# not in the services whose command line imports this module (issue 13).
if TYPE_CHECKING:
    import httpx

    from cli.client import PortalClient

__all__ = ["EXIT_CANNOT_WRITE", "EXIT_CONFIG", "EXIT_NOT_FOUND", "EXIT_REFUSED", "EXIT_SOFTWARE", "EXIT_TIMEOUT",
           "EXIT_UNAVAILABLE", "EXIT_USAGE", "PortalError", "PortalSession", "checked", "fail", "make_user",
           "open_client", "portal_client", "portal_options", "print_json", "problem_line", "progress", "session_of"]

EXIT_CANNOT_WRITE = 73  # EX_CANTCREAT: the output file (a receipt) cannot be written
EXIT_TIMEOUT = 75  # EX_TEMPFAIL: a wait ran out before the filing settled; asking again later may do
EXIT_CONFIG = 78  # EX_CONFIG: no such portal in the configuration, or its key cannot be read


class PortalError(Exception):
    """A portal command that cannot go on: `str(self)` is its one line, `exit_code` its end."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class PortalSession:
    """Where, as which portal and for which user a command asks, and how it prints. `user`
    None only for `submit`, which then vouches for each filing's declarant."""

    url: str
    portal: str
    user: str | None
    auth: str
    as_json: bool
    timeout: float = 10.0  # seconds for one answer from the hub


def session_of(ctx: click.Context, url: str | None, portal: str, user: str | None, auth: str,
               as_json: bool = False) -> PortalSession:
    """The command's `--url/--portal/--user/--auth/--json`: `--url`, or the configured hub."""
    return PortalSession(hub_url(ctx.obj["settings"], url), portal, user, auth, as_json)


def fail(message: str, code: int) -> NoReturn:
    """End the command: one line on stderr, exit `code`."""
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def make_user(tax_code: str, auth: str) -> User:
    """The user the portal vouches for; a malformed tax code or login method is exit 64."""
    from cli.client import demo_user

    try:
        return demo_user(tax_code, auth)
    except ValueError as exc:
        raise PortalError(f"--user {tax_code!r} / --auth {auth!r}: {exc}", EXIT_USAGE) from None


def open_client(settings: Settings, session: PortalSession) -> PortalClient:
    """The portal's signed client for the session.

    Raises:
        PortalError: an unknown portal or an unreadable key (78), a malformed user (64).
    """
    from bootstrap import portal_signer
    from cli.client import PortalClient

    if session.portal not in settings.portals:
        raise PortalError(f"no portal {session.portal!r} in the configuration ([portals.{session.portal}]); "
                          f"known: {', '.join(sorted(settings.portals)) or 'none'}", EXIT_CONFIG)
    user = make_user(session.user, session.auth) if session.user is not None else None
    try:
        signer = portal_signer(settings, session.portal)
    except OSError as exc:
        raise PortalError(f"portal {session.portal!r}: cannot read its key file "
                          f"{exc.filename or ''}: {exc.strerror or exc}", EXIT_CONFIG) from None
    except (KeyError, ValueError) as exc:
        reason = exc.args[0] if exc.args else type(exc).__name__
        raise PortalError(f"portal {session.portal!r} cannot sign: {reason}", EXIT_CONFIG) from None
    return PortalClient(session.url, signer, user=user, timeout=session.timeout)


@contextmanager
def portal_client(settings: Settings, session: PortalSession) -> Iterator[PortalClient]:
    """The session's client; whatever fails inside (a `PortalError`, the hub unreachable or too
    slow) ends the command in one line, never a traceback."""
    import httpx

    try:
        client = open_client(settings, session)
    except PortalError as exc:
        fail(str(exc), exc.exit_code)
    try:
        yield client
    except PortalError as exc:
        fail(str(exc), exc.exit_code)
    except httpx.TimeoutException as exc:
        fail(f"the hub at {session.url} did not answer in time ({type(exc).__name__})", EXIT_UNAVAILABLE)
    except httpx.HTTPError as exc:  # refused connection, DNS, a broken answer
        fail(f"cannot reach the hub at {session.url}: {type(exc).__name__}", EXIT_UNAVAILABLE)
    finally:
        client.close()


def problem_line(response: httpx.Response) -> str:
    """A refusal in one line: status, the problem's title and detail, the claim or the first of
    its errors."""
    try:
        problem = response.json()
        if not isinstance(problem, dict):
            raise ValueError
    except ValueError:
        return f"{response.status_code} {response.reason_phrase}: {response.text[:200]}".strip()
    line = f"{response.status_code} {problem.get('title') or response.reason_phrase}: {problem.get('detail') or ''}"
    if problem.get("claim"):
        line += f" [{problem.get('token')} claim {problem['claim']}]"
    errors = problem.get("errors") or []
    if errors and isinstance(errors[0], dict):
        first = errors[0]
        said = f"{first.get('location')}" + (f": {first.get('detail')}" if first.get("detail") != problem.get("detail")
                                             else "")
        line += f" ({said})" if len(errors) == 1 else f" ({len(errors)} errors, first: {said})"
    return line


def checked(response: httpx.Response, ok: tuple[int, ...] = ()) -> Any:
    """The JSON of a successful answer ({} when it has no body).

    Raises:
        PortalError: the hub's refusal, with the exit code its status calls for.
    """
    if not response.is_success or (ok and response.status_code not in ok):
        raise PortalError(problem_line(response), exit_code_for(response.status_code))
    if not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        raise PortalError(f"the hub answered {response.status_code} without JSON", EXIT_SOFTWARE) from None


def print_json(value: Any) -> None:
    """Machine-readable output: JSON only, on stdout."""
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def progress(line: str) -> None:
    """Progress while waiting: on stderr, so that stdout stays the answer (or its JSON)."""
    click.echo(line, err=True)


def portal_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`--url`, `--portal`, `--user`, `--auth`, `--json` on a portal command."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer (only it, on stdout).")(fn)
    fn = click.option("--auth", default="SPID2", show_default=True,
                      help="How the user logged in: SPID1..3, CIE or CNS.")(fn)
    fn = click.option("--user", envvar="CROCEVIA_USER", required=True, metavar="TAX_CODE",
                      help="The user the portal vouches for (env CROCEVIA_USER).")(fn)
    fn = click.option("--portal", envvar="CROCEVIA_PORTAL", default="demo", show_default=True,
                      help="The portal whose key signs (env CROCEVIA_PORTAL).")(fn)
    fn = click.option("--url", default=None, help="Hub base URL (default from config).")(fn)
    return fn
