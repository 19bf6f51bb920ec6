"""Admin-only management of operator accounts: list, add, change a role, disable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.ops.auth import OperatorGuard, read_fields
from api.problems import json_response, problem_response, store_unavailable
from domain.operators import OperatorError
from service.operators import OperatorAccounts, account_json
from service.ports import StoreError

if TYPE_CHECKING:
    from api.app import ApiContext

__all__ = ["operator_routes"]


def _refused(request: Request, exc: OperatorError) -> Response:
    titles = {404: "Not Found", 409: "Conflict", 422: "Unprocessable Content"}
    return problem_response(exc.status, exc.slug, titles.get(exc.status, "Bad Request"), exc.detail,
                            instance=request.url.path)


def _unavailable(request: Request) -> Response:
    return store_unavailable(request, "the store is not reachable; nothing was changed, retry later")


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in {"1", "true", "on", "yes"})


def operator_routes(ctx: ApiContext, guard: OperatorGuard) -> list[Route]:
    """`GET/POST /operators`, `POST /operators/{name}/role`, `POST /operators/{name}/disable` (admin)."""
    accounts: OperatorAccounts | None = ctx.operators

    async def list_operators(request: Request) -> Response:
        admin = await guard.require(request, "admin")
        if isinstance(admin, Response):
            return admin
        assert accounts is not None
        try:
            found = await run_in_threadpool(accounts.list)
        except StoreError:
            return _unavailable(request)
        return json_response({"operators": [account_json(a) for a in found]})

    async def add_operator(request: Request) -> Response:
        admin = await guard.require(request, "admin")
        if isinstance(admin, Response):
            return admin
        assert accounts is not None
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
        admin = await guard.require(request, "admin")
        if isinstance(admin, Response):
            return admin
        assert accounts is not None
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
        admin = await guard.require(request, "admin")
        if isinstance(admin, Response):
            return admin
        assert accounts is not None
        try:
            account = await run_in_threadpool(accounts.disable, request.path_params["name"], admin.actor)
        except OperatorError as exc:
            return _refused(request, exc)
        except StoreError:
            return _unavailable(request)
        return json_response(account_json(account))

    return [
        Route("/operators", list_operators, methods=["GET"]),
        Route("/operators", add_operator, methods=["POST"]),
        Route("/operators/{name}/role", change_role, methods=["POST"]),
        Route("/operators/{name}/disable", disable, methods=["POST"]),
    ]
