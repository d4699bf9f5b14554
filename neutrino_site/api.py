"""The one NinjaAPI: mounts the apps' routers, turns errors into one JSON shape, documents each task."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.openapi.schema import OpenAPISchema

from tasks_app.api.bulk import bulk_router
from tasks_app.api.groups import chains_router, group_submit_router, groups_router
from tasks_app.api.logs import logs_router
from tasks_app.api.openapi import task_paths
from tasks_app.api.routes import gateway_router, tasks_router
from tasks_app.api.schedules import schedules_router
from tasks_app.core.errors import DatabaseUnavailable, NeutrinoError


class NeutrinoAPI(NinjaAPI):
    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> OpenAPISchema:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        generic = schema["paths"].pop("/api/{task_name}", None)
        generic_batch = schema["paths"].pop("/api/{task_name}/batch", None)
        schema["paths"].update(task_paths(generic or {}, generic_batch))
        return schema


api = NeutrinoAPI(
    title="Neutrino",
    version="0.1.0",
    description="Run sync tasks at once and queue long ones to worker pools. Every task is one row you can poll.",
    openapi_url="/api/openapi.json",
    docs_url="/api/docs",
)
api.add_router("/api", gateway_router)
api.add_router("/api", group_submit_router)
api.add_router("/groups", groups_router)
api.add_router("/chains", chains_router)
# Before /tasks: its /tasks/{task_id} would take /tasks/bulk.
api.add_router("/tasks/bulk", bulk_router)
api.add_router("/tasks", tasks_router)
api.add_router("/schedules", schedules_router)
api.add_router("/tasks", logs_router)


@api.exception_handler(NeutrinoError)
def neutrino_error(request: HttpRequest, exc: NeutrinoError) -> HttpResponse:
    response = api.create_response(request, exc.body(), status=exc.status)
    if exc.status in (429, 503) and "retry_after_s" in exc.details:
        response["Retry-After"] = str(exc.details["retry_after_s"])
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="neutrino"'
    return response


def database_unavailable(request: HttpRequest, exc: Any) -> HttpResponse:
    """A database that refuses connections or dropped one (a restart, a failover) is a 503 to try again,
    not a 500. (A call that queues writes its row before it publishes, so the usual failure leaves
    nothing behind; an Idempotency-Key makes any retry safe.)"""
    return neutrino_error(request, DatabaseUnavailable("the database is unavailable; try again in a moment",
                                                       retry_after_s=1))


api.add_exception_handler(OperationalError, database_unavailable)
api.add_exception_handler(InterfaceError, database_unavailable)


@api.exception_handler(NinjaValidationError)
def request_invalid(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    fields = [
        {"field": ".".join(str(p) for p in e.get("loc", ())[1:]) or "request", "message": e.get("msg", "")}
        for e in exc.errors
    ]
    message = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or "invalid request"
    return api.create_response(
        request, {"error": "invalid_request", "message": message, "fields": fields}, status=422
    )


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return api.create_response(
        request, {"error": "http_error", "message": str(exc)}, status=exc.status_code
    )


@api.exception_handler(RequestDataTooBig)
def too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return api.create_response(
        request, {"error": "payload_too_large", "message": "request body is over the size limit"}, status=413
    )


@api.exception_handler(AuthenticationError)
def not_authenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return api.create_response(
        request, {"error": "unauthorized", "message": "this API needs 'Authorization: Bearer <token>'"}, status=401
    )
