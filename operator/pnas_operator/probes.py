"""The operator's own HTTP endpoint (kopf serves only liveness): `/metrics` for Prometheus and
`/readyz` for the kubelet's readiness probe, on `PNAS_OPERATOR_PROBE_PORT`."""

from __future__ import annotations

from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pnas_operator.metrics import REGISTRY


async def serve(port: int, problems: Callable[[], list[str]]) -> web.AppRunner:
    """Start serving; `problems()` lists why the operator is not ready (empty: ready)."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def ready(_: web.Request) -> web.Response:
        found = problems()
        return web.json_response({"ready": not found, "problems": found}, status=503 if found else 200)

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.get("/readyz", ready)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
