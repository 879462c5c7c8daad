"""The HTTP service: a FastAPI app over a panel of readers, and its one page.

Endpoints::

    GET  /         the page: paste a paragraph, ask questions, see each answer highlighted
    GET  /health   {"status": "ok", "readers": N}
    GET  /info     readers, weights, window/decode settings, limits, batching
    POST /answer   {"context": str, "questions": [str, ...], "nbest": bool = true}
                   → {"answers": [{question, answer, start, end, score, probability, nbest}], ...}

Every error is JSON ``{"error": ..., "details": [...]}``; bad input gets a 4xx status, never a
500 (``limits.py`` says which; a 405 names the allowed methods in ``Allow``). A 500 means a bug
of the service: its traceback is logged. Requests go through the micro-batcher, so concurrent
ones share forward passes. The OpenAPI document (``/openapi.json``, ``/docs``) declares the
request body with its limits and every error response.
"""

import errno
import logging
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from .answering import Query, answer
from .batcher import BatchSettings, MicroBatcher
from .limits import Limits, RequestError, parse_request, read_body, request_schema
from .readers import Panel

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """Every error the service answers."""

    error: str = Field(description="what is wrong, naming the field and the limit")
    details: list[str] = Field(default_factory=list, description="each problem, when there are several")


class Candidate(BaseModel):
    """One entry of an n-best list."""

    text: str
    start: int
    end: int
    score: float
    probability: float


class Answer(BaseModel):
    """The answer to one question (``answer`` is empty, its span and scores null, when there is none)."""

    question: str
    answer: str
    start: int | None
    end: int | None
    score: float | None
    probability: float | None
    nbest: list[Candidate] | None = Field(None, description="best first (absent with nbest: false)")


class AnswerResponse(BaseModel):
    """The answers, in the order of the questions."""

    answers: list[Answer]
    readers: list[str]
    seconds: float


def printable(text: str) -> str:
    """``text`` fit for a UTF-8 reply: a lone surrogate echoed from the request becomes ``\\udXXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _errors(**described: str) -> dict:
    return {int(status): {"model": ErrorBody, "description": text} for status, text in described.items()}


ANSWER_ERRORS = _errors(**{
    "400": "the body is not UTF-8 JSON, or holds what no input may (a lone surrogate, nesting deeper than 100 "
           "levels, a number of over 100 characters or not finite, a key given twice)",
    "413": "the body is over the size limit",
    "415": "the body is sent as another media type than application/json",
    "422": "fields missing, mistyped, empty or over their limits",
    "500": "a bug of the service (logged with its traceback)",
})


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
        return JSONResponse({"error": printable(message), "details": [printable(str(d)) for d in details or []]},
                            status_code=status)

    @app.exception_handler(RequestError)
    async def _refused(_request, err: RequestError):
        return error(err.status, err.message, err.details)

    @app.exception_handler(HTTPException)
    async def _http(_request, err: HTTPException):  # 404, 405 (its Allow header kept), …
        response = error(err.status_code, str(err.detail))
        response.headers.update(err.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, err: RequestValidationError):
        return error(422, "invalid request", [str(e) for e in err.errors()])

    @app.exception_handler(Exception)
    async def _bug(request, err: Exception):  # never the client's fault: say so, keep the traceback
        log.error("%s %s failed", request.method, request.url.path, exc_info=err)
        return error(500, f"internal error of the service ({type(err).__name__}); it is logged")

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page()

    @app.get("/health")
    async def health():
        return {"status": "ok", "readers": len(panel.readers)}

    @app.get("/info")
    async def info():
        return {**panel.info(), "limits": asdict(limits), "batching": asdict(batching), "calls": batcher.calls}

    body = {"required": True, "content": {"application/json": {"schema": request_schema(limits)}}}

    @app.post("/answer", summary="Answer questions about a paragraph",
              responses={200: {"model": AnswerResponse}, **ANSWER_ERRORS}, openapi_extra={"requestBody": body})
    async def answer_endpoint(request: Request):
        """Answer questions about one paragraph (the body is read and checked here, its size bounded first)."""
        t0 = time.perf_counter()
        queries, nbest = parse_request(await read_body(request, limits.max_body_bytes), limits)
        try:
            results = await batcher.submit([(q, nbest) for q in queries])
        except ValueError as err:  # a reader refusing this input (e.g. a check of the model's): its fault
            log.warning("a request the readers could not answer", exc_info=err)
            raise RequestError(422, f"cannot answer: {err}") from None
        return {"answers": results, "readers": [r.name for r in panel.readers],
                "seconds": round(time.perf_counter() - t0, 4)}

    return app


def open_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (before any model loads), or a ``ValueError`` naming them.

    The service then listens on this very socket, so nothing can take the port in between.
    """
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT is free
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        why = {errno.EADDRINUSE: "the port is already in use (another service listens there; pick another --port)",
               errno.EADDRNOTAVAIL: "not an address of this machine (pick another --host)",
               errno.EACCES: "permission denied (ports below 1024 need privileges; pick another --port)"}
        reason = why.get(err.errno) or (f"unknown host ({err.strerror})" if isinstance(err, socket.gaierror)
                                        else err.strerror or str(err))
        raise ValueError(f"cannot listen on {where}: {reason}") from None
    return sock


def serve(panel: Panel, host: str = "127.0.0.1", port: int = 8000, limits: Limits = Limits(),
          batching: BatchSettings = BatchSettings(), sock: socket.socket | None = None) -> None:
    """Run the service with uvicorn until interrupted, on ``sock`` (from :func:`open_socket`) when given."""
    import uvicorn

    sock = sock or open_socket(host, port)
    log.info("serving %d reader(s) on http://%s:%d/", len(panel.readers), host, port)
    config = uvicorn.Config(create_app(panel, limits, batching), host=host, port=port, log_level="info")
    uvicorn.Server(config).run(sockets=[sock])
