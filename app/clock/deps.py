"""The clock as an endpoint dependency."""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends, Request

from app.clock import Clock


class ClockResources(Protocol):
    """The running app's clock (``app.resources.State`` provides it)."""

    @property
    def clock(self) -> Clock: ...


def get_clock(request: Request) -> Clock:
    resources: ClockResources = request.app.resources
    return resources.clock


ClockDep = Annotated[Clock, Depends(get_clock)]
