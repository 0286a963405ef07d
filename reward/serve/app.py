"""The HTTP face of the server: a FastAPI app over the engine (requests -> tickets -> replies) and the
batcher (the one thread that runs the model).

    POST /score        native: groups of {prompt, completions} -> rewards (reward/serve/protocol.py)
    POST /get_reward   OpenRLHF's remote reward model protocol (`--remote_rm_url http://HOST:PORT/get_reward`)
    GET  /health       200 {"status": "ok"}; 503 once shutting down (for a load balancer's probe; no key)
    GET  /info         the model, its recorded format and reward statistics, the limits
    GET  /metrics      Prometheus text format (reward/serve/telemetry.py)

A request's path: the bearer key (401), the body read up to `max_body_bytes` (413), then parsing, the
field checks and tokenizing in one encoding thread (400 / 422 / 413; the event loop never tokenizes:
fast tokenizers are not safe to call from several threads at once, so there is one), then the batcher
(503 with Retry-After when `max_queue` completions already wait), then the reply. A client that goes
away while its request waits has its pieces dropped (status 499 in the metrics, nginx's "client closed
request"); the others are not touched.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from reward.errors import first_line
from reward.serve.batcher import Batcher, QueueFull
from reward.serve.engine import Engine, Ticket
from reward.serve.protocol import RequestError
from reward.serve.telemetry import Telemetry

logger = logging.getLogger("reward.serve")
RETRY_AFTER_S = 1  # what a 503 asks the client to wait
CLIENT_CLOSED = 499  # nginx's status for a client that closed the connection before the reply


def build_app(
    engine: Engine, batcher: Batcher, telemetry: Telemetry, info: dict[str, Any], api_key: str | None
) -> FastAPI:
    """The FastAPI app. `info` is GET /info's body; `api_key` (None: no key) guards every route but /health."""
    encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward-serve-encode")

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        # uvicorn gets here after the in-flight requests were answered (SIGTERM: graceful shutdown)
        await asyncio.to_thread(batcher.stop)
        encoder.shutdown(wait=True)

    app = FastAPI(title="reward-serve", version=info.get("version", ""), lifespan=lifespan)
    app.state.requests_cut = 0  # in flight when --graceful_timeout ran out (the closing line says how many)

    def refused(error: RequestError, headers: dict | None = None) -> Response:
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    def key_problem(request: Request) -> Response | None:
        if api_key is None:
            return None
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode()):
            return None  # the scheme's case does not matter (RFC 7235); the key is compared in constant time
        said = "a wrong key" if given else "no key"
        error = RequestError(401, f"this server needs its key: header 'Authorization: Bearer KEY' ({said} given)")
        return refused(error, {"WWW-Authenticate": "Bearer"})

    async def scored(request: Request, protocol: str) -> Response:
        endpoint = "/" + protocol
        started, status = time.perf_counter(), 500
        try:
            if (problem := key_problem(request)) is not None:
                status = problem.status_code
                return problem
            body = await read_body(request, engine.limits.max_body_bytes)
            loop = asyncio.get_running_loop()
            ticket = await loop.run_in_executor(encoder, engine.prepare, protocol, body)
            if ticket.completions > batcher.max_queue:  # would be refused as "busy" however long it waited
                raise RequestError(
                    413,
                    f"the request holds {ticket.completions} completions to score; this server queues at "
                    f"most {batcher.max_queue} (--max_queue): send several requests",
                )
            done = loop.create_future()
            ticket.on_done = lambda: loop.call_soon_threadsafe(settle, done)
            batcher.submit(ticket)
            try:
                answered = await finished_or_gone(done, request)
            except asyncio.CancelledError:  # uvicorn's --graceful_timeout ran out: this request is cut
                batcher.cancel(ticket)
                app.state.requests_cut += 1
                raise
            if not answered:
                telemetry.dropped.inc(batcher.cancel(ticket))
                status = CLIENT_CLOSED
                return Response(status_code=CLIENT_CLOSED)
            if ticket.error is not None:
                message = f"scoring failed: {type(ticket.error).__name__}: {first_line(ticket.error)}"
                return JSONResponse({"error": message}, status_code=500)
            reply = engine.reply(ticket)
            count_lengths(telemetry, ticket)
            status = 200
            return JSONResponse(reply)
        except RequestError as error:
            status = error.status
            return refused(error)
        except QueueFull as exc:
            status = 503
            error = RequestError(503, f"busy: {exc}; retry after {RETRY_AFTER_S} s")
            return refused(error, {"Retry-After": str(RETRY_AFTER_S)})
        except ClientDisconnect:
            status = CLIENT_CLOSED
            return Response(status_code=CLIENT_CLOSED)
        except Exception as exc:  # a bug: the reply keeps its JSON shape, the traceback goes to the log
            logger.exception("reward-serve: %s failed", endpoint)
            return JSONResponse({"error": f"internal error: {type(exc).__name__}: {first_line(exc)}"}, status_code=500)
        finally:
            telemetry.requests.labels(endpoint, str(status)).inc()
            telemetry.latency.labels(endpoint).observe(time.perf_counter() - started)

    @app.post("/score")
    async def score(request: Request) -> Response:
        """Native: {"groups": [{"prompt": P, "completions": [C, ...]}, ...]} -> {"rewards": [[...], ...]}."""
        return await scored(request, "score")

    @app.post("/get_reward")
    async def get_reward(request: Request) -> Response:
        """OpenRLHF: {"query": [...], "prompts": [...]} -> {"rewards": [...], "scores": [...], "extra_logs": {...}}."""
        return await scored(request, "get_reward")

    @app.get("/health")
    async def health() -> Response:
        if batcher.stopping:
            return JSONResponse({"status": "shutting down"}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"status": "ok"})

    @app.get("/info")
    async def get_info(request: Request) -> Response:
        if (problem := key_problem(request)) is not None:
            return problem
        return JSONResponse(info)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if (problem := key_problem(request)) is not None:
            return problem
        body, content_type = telemetry.render()
        return Response(body, media_type=content_type)

    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes (its Content-Length, or
    the bytes read so far when it is sent in chunks)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(
            413, f"the body has {int(declared):,} bytes; this server takes at most {limit:,} (--max_body_mb)"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is over {limit:,} bytes, the most this server takes (--max_body_mb)")
        chunks.append(chunk)
    return b"".join(chunks)


async def finished_or_gone(done: asyncio.Future, request: Request) -> bool:
    """Wait for the ticket's rewards, or for the client to close the connection: True when scored."""
    gone = asyncio.ensure_future(disconnected(request))
    try:
        await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    return done.done()


async def disconnected(request: Request) -> None:
    """Returns when the server hears that the client went away (the body was read: the next ASGI message
    is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def settle(done: asyncio.Future) -> None:
    if not done.done():
        done.set_result(None)


def count_lengths(telemetry: Telemetry, ticket: Ticket) -> None:
    for event in ticket.lengths:
        telemetry.lengths.labels(event["action"]).inc()
