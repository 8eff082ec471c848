"""FastAPI dependencies that turn the ``Authorization`` header into a :class:`Principal`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.keys.errors import MissingApiKey
from app.keys.schemas import Principal, Scope
from app.keys.service import Authenticator, require

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer tg_...`")


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise MissingApiKey("missing API key: send 'Authorization: Bearer <key>'")
    authenticator: Authenticator = request.app.state.authenticator
    principal = await authenticator.authenticate(credentials.credentials)
    request.state.principal = principal
    return principal


def require_scope(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        require(principal, scope)
        return principal

    return dependency


Authenticated = Annotated[Principal, Depends(authenticate)]
