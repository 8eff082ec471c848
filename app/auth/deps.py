"""FastAPI dependencies that turn the ``Authorization`` header into a :class:`Principal`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

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
    return await authenticate_request(request)


def require_scope(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        require(principal, scope)
        return principal

    return dependency


Authenticated = Annotated[Principal, Depends(authenticate)]
Developer = Annotated[Principal, Depends(require_scope(Scope.predict))]
Admin = Annotated[Principal, Depends(require_scope(Scope.admin))]
Finance = Annotated[Principal, Depends(require_scope(Scope.finance))]
