"""The benchmark's baseline: a bare FastAPI endpoint serving the same shipped models.

No auth, no metering, no validation beyond what numpy does: the ceiling Tollgate's
request path is compared against. Same stack as Tollgate (uvicorn, orjson, torch in a
worker thread, one torch thread). Run: ``python -m scripts.bare_server --port 8101``.

It serves the very archives Tollgate serves (each shipped base model's ``model.pt``, read
with ``app.catalog.archive.load_archive``), not modules rebuilt from training weights, so a
difference in the benchmark is the request path's and never the model's.

``--graph script`` runs each float32 model through the same CPU graph optimization Tollgate
serves with (``app/catalog/graph.py``), for a like-for-like comparison of the request path
alone; the default (eager) is the plain endpoint a developer would write.
"""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import numpy as np
import orjson
import torch
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

from app.catalog.archive import ArchiveFormat, load_archive
from app.catalog.graph import CpuGraph, optimize_for_cpu
from app.catalog.service import shipped_snapshot
from app.catalog.store import DirectoryStore
from app.config import shipped_models_dir


def build(graph: CpuGraph = "eager") -> FastAPI:
    torch.set_num_threads(1)
    models_dir = shipped_models_dir()
    store = DirectoryStore(models_dir, builtin_root=models_dir)  # builtin: URIs only
    modules: dict[str, tuple[torch.nn.Module, tuple[str, ...] | None]] = {}
    for card in shipped_snapshot(models_dir).cards:
        if card.variant is not None:
            continue
        fmt = cast(ArchiveFormat, card.archive_format)
        module = load_archive(store.local_path(card.archive_uri), fmt)
        module, _ = optimize_for_cpu(module, tuple(card.inputs[0].shape), graph)
        modules[card.name] = (module, card.labels)
    executor = ThreadPoolExecutor(max_workers=2)
    app = FastAPI()

    def run(name: str, inputs: Any) -> list[dict[str, Any]]:
        module, labels = modules[name]
        batch = np.asarray(inputs, dtype=np.float32)
        if batch.ndim == 1 or (labels is not None and batch.ndim == 3):
            batch = batch[np.newaxis]
        with torch.inference_mode():
            out = module(torch.from_numpy(batch)).numpy()
        rows = out.tolist()
        if labels is None:
            return [{"target": r} for r in rows]
        return [
            {"label": labels[i], "logits": r}
            for i, r in zip(out.argmax(1).tolist(), rows, strict=True)
        ]

    @app.post("/predict/{name}")
    async def predict(name: str, request: Request) -> Response:
        inputs = orjson.loads(await request.body())["inputs"]
        outputs = await asyncio.get_running_loop().run_in_executor(executor, run, name, inputs)
        return Response(orjson.dumps({"outputs": outputs}), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--graph", choices=["eager", "channels_last", "script"], default="eager")
    args = parser.parse_args()
    uvicorn.run(
        build(args.graph), host="127.0.0.1", port=args.port, access_log=False, log_level="warning"
    )
