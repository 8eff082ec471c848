"""The clock as an endpoint dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.clock import Clock


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


ClockDep = Annotated[Clock, Depends(get_clock)]
