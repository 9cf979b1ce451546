"""HTTP control API of the carrier simulator: faults, MO and counters at run time.

Listens on 127.0.0.1 only (it can take a carrier down). JSON in and out:

* ``POST /outage/drop`` — close every connection: ``{"dropped": n}``;
* ``POST /outage/refuse?seconds=N`` — answer binds with ESME_RBINDFAIL for
  N seconds (``&drop=1`` also closes the current ones);
* ``POST /outage/stall?seconds=N`` — stop reading every connection for N
  seconds (0 ends a stall);
* ``POST /mo`` ``{"from", "to", "text", "system_id"?, "ref"?}`` — a
  mobile-originated message to a receiving bind: ``{"parts", "statuses"}``;
  409 when no receiving bind is up;
* ``GET /stats`` — `CarrierSimulator.stats()`;
* ``POST /reset`` — forget records and counters, end outages.
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import web

from smsrouter.connectors.smpp_link import LinkClosed, ResponseTimeout

if TYPE_CHECKING:
    from smsrouter.sims.carrier import CarrierSimulator

__all__ = ["ControlApi"]


def _problem(status: int, detail: str) -> web.Response:
    # RFC 9457 problem details, as the router's own API answers.
    return web.json_response(
        {
            "type": "about:blank",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": detail,
        },
        status=status,
        content_type="application/problem+json",
    )


def _seconds(request: web.Request) -> float:
    raw = request.query.get("seconds")
    if raw is None:
        raise ValueError("query parameter seconds is required")
    seconds = float(raw)
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ValueError("seconds must be a finite number >= 0")
    return seconds


class ControlApi:
    """Explicit start/stop, as aiohttp's AppRunner: `await api.start(host, port)`."""

    def __init__(self, sim: CarrierSimulator) -> None:
        self.sim = sim
        self.port = 0
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_post("/outage/drop", self._drop)
        app.router.add_post("/outage/refuse", self._refuse)
        app.router.add_post("/outage/stall", self._stall)
        app.router.add_post("/mo", self._mo)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/reset", self._reset)
        self.app = app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------ handlers

    async def _drop(self, request: web.Request) -> web.Response:
        return web.json_response({"dropped": self.sim.drop_binds()})

    async def _refuse(self, request: web.Request) -> web.Response:
        try:
            seconds = _seconds(request)
        except ValueError as exc:
            return _problem(400, str(exc))
        self.sim.refuse_binds(seconds)
        dropped = 0
        if request.query.get("drop", "").lower() in ("1", "true", "yes"):
            dropped = self.sim.drop_binds()
        return web.json_response({"refusing_for": seconds, "dropped": dropped})

    async def _stall(self, request: web.Request) -> web.Response:
        try:
            seconds = _seconds(request)
        except ValueError as exc:
            return _problem(400, str(exc))
        self.sim.stall(seconds)
        return web.json_response({"stalled_for": seconds})

    async def _mo(self, request: web.Request) -> web.Response:
        try:
            body: Any = await request.json()
        except ValueError:
            return _problem(400, "the body is not JSON")
        if not isinstance(body, dict):
            return _problem(400, "the body is not a JSON object")
        missing = [k for k in ("from", "to", "text") if not isinstance(body.get(k), str)]
        if missing:
            return _problem(422, f"string fields required: {', '.join(missing)}")
        system_id = body.get("system_id")
        ref = body.get("ref")
        if system_id is not None and not isinstance(system_id, str):
            return _problem(422, "system_id must be a string")
        if ref is not None and not (isinstance(ref, int) and 0 <= ref <= 255):
            return _problem(422, "ref must be an integer 0..255 (8-bit concatenation reference)")
        try:
            statuses = await self.sim.send_mo(
                body["from"], body["to"], body["text"], system_id=system_id, ref=ref
            )
        except LookupError as exc:
            return _problem(409, str(exc))
        except ValueError as exc:
            return _problem(422, str(exc))
        except (LinkClosed, ResponseTimeout) as exc:
            return _problem(502, f"the bind did not answer: {exc!r}")
        return web.json_response({"parts": len(statuses), "statuses": statuses})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.sim.stats())

    async def _reset(self, request: web.Request) -> web.Response:
        self.sim.reset()
        return web.json_response({"reset": True})
