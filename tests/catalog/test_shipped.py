"""The shipped models: what a fresh catalog registers is what a replica serves while the
database cannot be read at start-up, and seeding never overwrites an admin's changes."""

from __future__ import annotations

import dataclasses

from fastapi import FastAPI

from app.catalog import repository, service
from app.resources import resources


async def test_the_offline_snapshot_is_the_seeded_catalog(app: FastAPI) -> None:
    models_dir = resources(app).settings.models_dir
    async with resources(app).sessionmaker() as session:
        seeded = await repository.snapshot(session)
    offline = service.shipped_snapshot(models_dir)

    def key(cards: tuple[object, ...]) -> list[object]:
        return sorted(
            (dataclasses.replace(c, version_created_at=None) for c in cards),  # type: ignore[type-var]
            key=lambda c: c.ref,  # type: ignore[attr-defined]
        )

    assert key(offline.cards) == key(seeded.cards)
    assert {c.ref for c in offline.cards} == {
        "cnn",
        "cnn:int8",
        "cnn:fp16",
        "cnn:pruned",
        "cnn:distilled",
        "linreg",
    }


async def test_seeding_again_keeps_what_admins_changed(app: FastAPI) -> None:
    models_dir = resources(app).settings.models_dir
    async with resources(app).sessionmaker() as session:
        await service.set_loaded(session, "test", "cnn:int8", "1", False)
        assert await service.seed_builtin(session, models_dir) == []
        await session.commit()
        catalog = await repository.snapshot(session)
    (int8,) = [c for c in catalog.cards if c.ref == "cnn:int8"]
    assert not int8.loaded
