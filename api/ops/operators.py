"""Admin-only management of operator accounts: list, add, change a role, disable."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import context_of, ops_guard_of
from api.ops.auth import read_fields
from api.problems import json_response, problem_response, store_unavailable
from domain.operators import OperatorError
from service.operators import OperatorAccounts, account_json
from service.ports import StoreError

__all__ = ["operator_routes"]


def _refused(request: Request, exc: OperatorError) -> Response:
    titles = {404: "Not Found", 409: "Conflict", 422: "Unprocessable Content"}
    return problem_response(exc.status, exc.slug, titles.get(exc.status, "Bad Request"), exc.detail,
                            instance=request.url.path)


def _unavailable(request: Request) -> Response:
    return store_unavailable(request, "the store is not reachable; nothing was changed, retry later")


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in {"1", "true", "on", "yes"})


def _accounts(request: Request) -> OperatorAccounts:
    accounts = context_of(request).operators
    assert accounts is not None  # mounted only with operator accounts
    return accounts


async def list_operators(request: Request) -> Response:
    """`GET /operators` (admin)."""
    admin = await ops_guard_of(request).require(request, "admin")
    if isinstance(admin, Response):
        return admin
    try:
        found = await run_in_threadpool(_accounts(request).list)
    except StoreError:
        return _unavailable(request)
    return json_response({"operators": [account_json(a) for a in found]})


async def add_operator(request: Request) -> Response:
    """`POST /operators` (admin): name, role, optionally password and totp."""
    admin = await ops_guard_of(request).require(request, "admin")
    if isinstance(admin, Response):
        return admin
    accounts = _accounts(request)
    fields = await read_fields(request)
    if isinstance(fields, Response):
        return fields
    name, role, password = fields.get("name"), fields.get("role"), fields.get("password") or None
    if not isinstance(name, str) or not isinstance(role, str) or not (password is None or isinstance(password, str)):
        return problem_response(400, "invalid-operator-request", "Bad Request",
                                "send name and role (viewer, operator or admin), optionally password and totp",
                                instance=request.url.path)
    try:
        account, uri = await run_in_threadpool(lambda: accounts.add(
            name, role, admin.actor, password=password, totp=_flag(fields.get("totp"))))
    except OperatorError as exc:
        return _refused(request, exc)
    except StoreError:
        return _unavailable(request)
    body = account_json(account)
    if uri is not None:
        body["totpProvisioningUri"] = uri  # shown once: the secret is not readable later
    return json_response(body, 201)


async def change_role(request: Request) -> Response:
    """`POST /operators/{name}/role` (admin)."""
    admin = await ops_guard_of(request).require(request, "admin")
    if isinstance(admin, Response):
        return admin
    accounts = _accounts(request)
    fields = await read_fields(request)
    if isinstance(fields, Response):
        return fields
    role = fields.get("role")
    if not isinstance(role, str):
        return problem_response(400, "invalid-operator-request", "Bad Request",
                                "send role: viewer, operator or admin", instance=request.url.path)
    try:
        account = await run_in_threadpool(accounts.set_role, request.path_params["name"], role, admin.actor)
    except OperatorError as exc:
        return _refused(request, exc)
    except StoreError:
        return _unavailable(request)
    return json_response(account_json(account))


async def disable(request: Request) -> Response:
    """`POST /operators/{name}/disable` (admin)."""
    admin = await ops_guard_of(request).require(request, "admin")
    if isinstance(admin, Response):
        return admin
    try:
        account = await run_in_threadpool(_accounts(request).disable, request.path_params["name"], admin.actor)
    except OperatorError as exc:
        return _refused(request, exc)
    except StoreError:
        return _unavailable(request)
    return json_response(account_json(account))


def operator_routes() -> list[Route]:
    """`GET/POST /operators`, `POST /operators/{name}/role`, `POST /operators/{name}/disable` (admin)."""
    return [
        Route("/operators", list_operators, methods=["GET"]),
        Route("/operators", add_operator, methods=["POST"]),
        Route("/operators/{name}/role", change_role, methods=["POST"]),
        Route("/operators/{name}/disable", disable, methods=["POST"]),
    ]
