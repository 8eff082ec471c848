"""FastAPI dependencies that turn the ``Authorization`` header into a :class:`Principal`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.routing import BaseRoute

from app.auth.authenticator import Authenticator, require
from app.auth.errors import MissingApiKey
from app.auth.principal import Principal, Scope

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer tg_...`")

# For hot routes that authenticate without the dependency machinery (see
# ``authenticate_request``): declares the same security scheme in OpenAPI.
BEARER_SECURITY: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


class AuthResources(Protocol):
    """What authentication reads from the running app (``app.resources.State`` provides it)."""

    @property
    def authenticator(self) -> Authenticator: ...


def authenticator(request: HTTPConnection) -> Authenticator:
    """The running app's authenticator."""
    resources: AuthResources = request.app.resources
    return resources.authenticator


async def authenticate_request(request: Request) -> Principal:
    """Resolve the request's bearer key. Same result as the ``Authenticated`` dependency,
    callable directly from a hot path."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MissingApiKey("missing API key: send 'Authorization: Bearer <key>'")
    principal = await authenticator(request).authenticate(token)
    request.state.principal = principal
    return principal


async def authenticate(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    known = getattr(request.state, "principal", None)
    if isinstance(known, Principal):  # resolved already, before the body (ProtectedRoute)
        return known
    return await authenticate_request(request)


def require_scope(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        require(principal, scope)
        return principal

    dependency._tollgate_scope = scope  # type: ignore[attr-defined] # read by ProtectedRoute
    return dependency


_ANY_KEY = "any key"
authenticate._tollgate_scope = _ANY_KEY  # type: ignore[attr-defined]


def _requirements(dependant: Dependant) -> set[Scope | str]:
    """What the route's dependencies ask of the caller: scopes, or any valid key."""
    found: set[Scope | str] = set()
    stack = list(dependant.dependencies)
    while stack:
        dep = stack.pop()
        marker = getattr(dep.call, "_tollgate_scope", None)
        if marker is not None:
            found.add(marker)
        stack.extend(dep.dependencies)
    return found


def needs_key(route: APIRoute) -> bool:
    """Whether the route's dependencies ask for a key (any key, or a scope)."""
    return bool(_requirements(route.dependant))


class ProtectedRoute(APIRoute):
    """A route that authenticates, and checks its scopes, before FastAPI reads the body.

    FastAPI parses a JSON body before it solves any dependency, so a request without a key
    but with broken JSON got 422 and told an anonymous caller about the route's input. Here
    the key (and each scope the route's dependencies require) is checked first; the
    ``authenticate`` dependency then reuses the principal. Every router uses this class
    (``check_protected_routes`` refuses to start otherwise)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        needs = _requirements(self.dependant)
        if not needs:
            return handler
        scopes = [need for need in needs if isinstance(need, Scope)]

        async def authenticated_first(request: Request) -> Response:
            principal = await authenticate_request(request)
            for scope in scopes:
                require(principal, scope)
            return await handler(request)

        return authenticated_first


def check_protected_routes(routes: Iterable[BaseRoute]) -> None:
    """Every route that needs a key is a :class:`ProtectedRoute` (a router that forgot
    ``route_class`` would read bodies before keys again)."""
    for context in iter_route_contexts(list(routes)):
        route = context.original_route
        if (
            isinstance(route, APIRoute)
            and not isinstance(route, ProtectedRoute)
            and _requirements(route.dependant)
        ):
            raise TypeError(
                f"{route.path}: a route that needs an API key must be a ProtectedRoute "
                "(APIRouter(route_class=ProtectedRoute))"
            )


Authenticated = Annotated[Principal, Depends(authenticate)]
Developer = Annotated[Principal, Depends(require_scope(Scope.predict))]
Admin = Annotated[Principal, Depends(require_scope(Scope.admin))]
Finance = Annotated[Principal, Depends(require_scope(Scope.finance))]
Billing = Annotated[Principal, Depends(require_scope(Scope.billing))]
