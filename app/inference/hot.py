"""The hot routes' shortcut, at the router: predict and infer skip only the route scan and
FastAPI's dependency solving.

For a small model, FastAPI's routing and dependency solving are a measurable share of a
request's CPU time (docs/benchmarks.md). The predict/infer endpoints authenticate themselves
(``authenticate_request``) and take only the request and their path/query parameters, so the
framework has nothing to solve for them. This shortcut sits where the router's route scan
would run (``app.router.middleware_stack``), i.e. inside the app's whole middleware stack and
its ``ExceptionMiddleware``: every middleware and exception handler, including those added
after ``create_app``, applies to the hot routes as to any other.

Nothing here is a second router: the routes are the declared ``APIRoute`` objects, matched
with their own ``route.matches(scope)`` (path, path converters, methods), and their declared
path and query parameters are validated by their declared fields (what FastAPI's
``request_params_to_args`` does, for plain scalars), so
constraints such as ``max_length`` come from the route declaration. A request they would
reject (a validation error, a wrong method) is left to the normal route scan, which answers
it the usual way. An exception from the endpoint goes up to the app's
``ExceptionMiddleware``, which renders it with the app's handlers, as for any route.

The hot routes are tried before the scan, so none may be shadowed by a route declared
before it (none is: their paths are specific; the parity test would show a difference).

``TOLLGATE_HOT_PATH=false`` leaves this out; a parity test runs the same requests both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, params
from fastapi._compat import ModelField, field_annotation_is_sequence
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel, Json
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(frozen=True, slots=True)
class _Param:
    """A declared path or query parameter, read and validated as FastAPI would."""

    name: str
    alias: str
    field: ModelField
    loc: tuple[str, str]
    required: bool
    default: Any
    copy_default: bool  # a mutable default is copied per request, as FastAPI does
    validate_default: bool


def _param(field: ModelField, where: str) -> _Param:
    info = field.field_info
    annotation = info.annotation
    if (
        field_annotation_is_sequence(annotation)
        or (isinstance(annotation, type) and issubclass(annotation, BaseModel))
        or info.validation_alias is not None
        or (info.metadata and any(type(m) is Json for m in info.metadata))
    ):
        raise TypeError(f"{where}: a hot route's parameters are plain scalars")
    if not isinstance(info, params.Param):
        raise TypeError(f"{where}: {field.name} is not a path or query parameter")
    default = field.default
    return _Param(
        field.name,
        field.alias,
        field,
        (info.in_.value, field.alias),
        required=info.is_required(),
        default=default,
        copy_default=not isinstance(default, str | int | float | bool | type(None)),
        validate_default=bool(info.validate_default),
    )


@dataclass(frozen=True, slots=True)
class HotRoute:
    """A declared route as the app serves it (its full path, its resolved dependant)."""

    route: APIRoute
    path_format: str
    matches: Callable[[Scope], tuple[Match, Scope]]
    dependant: Dependant
    endpoint: Callable[..., Any]
    request_param: str
    path_params: tuple[_Param, ...]
    query_params: tuple[_Param, ...]


def _hot_route(context: RouteContext) -> HotRoute:
    """The route, checked to be one the shortcut can serve without FastAPI's solver."""
    route = context.original_route
    d: Dependant | None = context.dependant
    assert isinstance(route, APIRoute) and d is not None
    unsolvable = (
        d.dependencies,
        d.header_params,
        d.cookie_params,
        d.body_params,
        d.response_param_name,
        d.background_tasks_param_name,
        d.security_scopes_param_name,
    )
    if any(unsolvable) or d.request_param_name is None:
        raise TypeError(
            f"{context.path}: a hot route takes only the Request and path/query parameters"
        )
    return HotRoute(
        route=route,
        path_format=context.path_format or route.path_format,
        matches=context.matches,
        dependant=d,
        endpoint=route.endpoint,
        request_param=d.request_param_name,
        path_params=tuple(_param(f, route.path) for f in d.path_params),
        query_params=tuple(_param(f, route.path) for f in d.query_params),
    )


_NO_QUERY = QueryParams()


def _read(params: tuple[_Param, ...], source: Mapping[str, Any], into: dict[str, Any]) -> bool:
    """Validate ``params`` from ``source`` into ``into``; False at the first error."""
    for p in params:
        value = source.get(p.alias)
        if value is None:
            if p.required:
                return False
            value = deepcopy(p.default) if p.copy_default else p.default
            if not p.validate_default:
                into[p.name] = value
                continue
        value, errors = p.field.validate(value, into, loc=p.loc)
        if errors:
            return False
        into[p.name] = value
    return True


class HotRoutes:
    """Router-level ASGI app: a request for a hot route goes straight to its endpoint;
    anything else (and any request the declared parameters would reject) goes to ``app``,
    the router's route scan."""

    def __init__(self, app: ASGIApp, router: Router, routes: list[RouteContext]) -> None:
        self.app = app
        self.router = router
        self.routes = [_hot_route(r) for r in routes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # FastAPI's own tracing notes the matched route during the scan: leave it the scan.
        if scope["type"] == "http" and "fastapi.telemetry" not in scope:
            for hot in self.routes:
                match, child_scope = hot.matches(scope)
                if match is Match.FULL:
                    kwargs = self._arguments(hot, scope, child_scope["path_params"])
                    if kwargs is not None:
                        scope.setdefault("router", self.router)
                        scope["route"] = hot.route
                        scope.update(child_scope)
                        await self.serve(scope, receive, send, hot, kwargs)
                        return
        await self.app(scope, receive, send)

    @staticmethod
    def _arguments(
        hot: HotRoute, scope: Scope, path_params: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The endpoint's arguments, validated as declared; None if FastAPI would refuse.

        What ``request_params_to_args`` does for plain scalar parameters (checked at
        install), without its per-request look at each annotation (~40 µs here)."""
        values: dict[str, Any] = {}
        if not _read(hot.path_params, path_params, values):
            return None
        if hot.query_params:
            query = QueryParams(scope["query_string"]) if scope["query_string"] else _NO_QUERY
            if not _read(hot.query_params, query, values):
                return None
        return values

    @staticmethod
    async def serve(
        scope: Scope, receive: Receive, send: Send, hot: HotRoute, kwargs: dict[str, Any]
    ) -> None:
        # An exception goes up to the app's ExceptionMiddleware, a few frames out, which
        # renders it with the same handlers a routed endpoint's wrapper would use.
        kwargs[hot.request_param] = Request(scope, receive, send)
        response = await hot.endpoint(**kwargs)
        if not isinstance(response, Response):
            raise TypeError(f"{hot.path_format}: a hot endpoint returns a Response")
        await response(scope, receive, send)


def install_hot_routes(app: FastAPI, *endpoints: Callable[..., Any]) -> HotRoutes:
    """Serve ``endpoints`` by the shortcut: call it once every route is included (the
    routes are taken as the app resolved them then: full path, merged dependencies)."""
    routes = [
        context
        for context in iter_route_contexts(app.router.routes)
        if isinstance(context.original_route, APIRoute) and context.endpoint in endpoints
    ]
    missing = set(endpoints) - {r.endpoint for r in routes}
    if missing:
        raise LookupError(f"no declared route for {sorted(e.__name__ for e in missing)}")
    hot = HotRoutes(app.router.middleware_stack, app.router, routes)
    app.router.middleware_stack = hot
    return hot


def hot_routes(app: FastAPI) -> HotRoutes | None:
    """The app's shortcut, if installed."""
    stack = app.router.middleware_stack
    return stack if isinstance(stack, HotRoutes) else None
