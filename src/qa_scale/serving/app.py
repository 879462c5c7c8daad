"""The HTTP service: a FastAPI app over a panel of readers, and its one page.

Endpoints::

    GET  /         the page: paste a paragraph, ask questions, see each answer highlighted
    GET  /health   {"status": "ok", "readers": N}
    GET  /info     readers, weights, window/decode settings, limits, batching
    POST /answer   {"context": str, "questions": [str, ...], "nbest": bool = true}
                   → {"answers": [{question, answer, start, end, score, probability, nbest}], ...}

Every error is JSON ``{"error": ..., "details": [...]}``; bad input gets a 4xx status, never a
500 (``limits.py`` says which). Requests go through the micro-batcher, so concurrent ones
share forward passes.
"""

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from .answering import Query, answer
from .batcher import BatchSettings, MicroBatcher
from .limits import Limits, RequestError, parse_request, read_body
from .readers import Panel

log = logging.getLogger(__name__)


def page() -> str:
    """The service's web page (package data)."""
    return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")


def create_app(panel: Panel, limits: Limits = Limits(), batching: BatchSettings = BatchSettings()) -> FastAPI:
    """The FastAPI app answering with ``panel`` (its models are already loaded).

    Args:
        panel: the readers.
        limits: what one request may ask.
        batching: how concurrent requests share forward passes.
    """
    def answer_all(queries: list[tuple[Query, bool]]) -> list[dict]:
        results = answer(panel, [q for q, _ in queries], nbest=True)
        for result, (_, nbest) in zip(results, queries):
            if not nbest:
                result.pop("nbest")
        return results

    batcher = MicroBatcher(answer_all, batching)

    @asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="qa-scale", summary="Extractive question answering with trained readers",
                  lifespan=lifespan)
    app.state.batcher, app.state.panel = batcher, panel

    def error(status: int, message: str, details: list | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "details": details or []}, status_code=status)

    @app.exception_handler(RequestError)
    async def _refused(_request, err: RequestError):
        return error(err.status, err.message, err.details)

    @app.exception_handler(HTTPException)
    async def _http(_request, err: HTTPException):
        return error(err.status_code, str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, err: RequestValidationError):
        return error(422, "invalid request", [str(e) for e in err.errors()])

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page()

    @app.get("/health")
    async def health():
        return {"status": "ok", "readers": len(panel.readers)}

    @app.get("/info")
    async def info():
        return {**panel.info(), "limits": asdict(limits), "batching": asdict(batching), "calls": batcher.calls}

    @app.post("/answer")
    async def answer_endpoint(request: Request):
        t0 = time.perf_counter()
        queries, nbest = parse_request(await read_body(request, limits.max_body_bytes), limits)
        try:
            results = await batcher.submit([(q, nbest) for q in queries])
        except ValueError as err:  # e.g. text the tokenizer cannot encode: the input's fault
            raise RequestError(422, str(err)) from None
        return {"answers": results, "readers": [r.name for r in panel.readers],
                "seconds": round(time.perf_counter() - t0, 4)}

    return app


def serve(panel: Panel, host: str = "127.0.0.1", port: int = 8000, limits: Limits = Limits(),
          batching: BatchSettings = BatchSettings()) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    log.info("serving %d reader(s) on http://%s:%d/", len(panel.readers), host, port)
    uvicorn.run(create_app(panel, limits, batching), host=host, port=port, log_level="info")
