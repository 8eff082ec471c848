"""The benchmark's baseline: a bare FastAPI endpoint serving the same shipped models.

No auth, no metering, no validation beyond what numpy does: the ceiling Tollgate's
request path is compared against. Same stack as Tollgate (uvicorn, orjson, torch in a
worker thread, one torch thread). Run: ``python -m scripts.bare_server --port 8101``.

``--graph script`` runs each float32 model through the same CPU graph optimization Tollgate
serves with (``app/catalog/graph.py``), for a like-for-like comparison of the request path
alone; the default (eager) is the plain endpoint a developer would write.
"""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import torch
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

from app.catalog.graph import CpuGraph, optimize_for_cpu
from app.config import shipped_models_dir
from models.manifest import discover, load_weights


def build(graph: CpuGraph = "eager") -> FastAPI:
    torch.set_num_threads(1)
    modules: dict[str, tuple[torch.nn.Module, tuple[str, ...] | None]] = {}
    for mdir, manifest in discover(shipped_models_dir()):
        if manifest.variant is not None:
            continue
        module = load_weights(mdir, manifest).eval()
        module, _ = optimize_for_cpu(module, tuple(manifest.inputs[0].shape), graph)
        modules[manifest.name] = (module, manifest.labels)
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
