"""`nyxmed serve`: an HTTP JSON API in front of a :class:`~nyxmed.coder.Coder` (FastAPI on uvicorn).

``POST /v1/code`` takes one report or ``{"reports": [...]}`` and answers one result per report, as
``nyxmed code`` writes them; ``GET /healthz``; ``GET /v1/release`` (version, preprocessor id, adapter
sha256). A bearer token is required when one is configured; bodies over the size limit get 413, bad
input 422 naming the field. The generator is in-process (transformers) or an upstream
OpenAI-compatible engine (``vllm serve``), which then does the batching.
"""

# No `from __future__ import annotations`: FastAPI reads the request models from the annotations of
# handlers defined inside create_app, which must be real types, not strings.

import hmac
import threading
from typing import Any

from nyxmed.cases import InvalidCase, report_case_from_record
from nyxmed.coder import Coder
from nyxmed.errors import NyxmedError


def _require_fastapi():
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise NyxmedError("nyxmed serve needs FastAPI and uvicorn: pip install 'nyxmed[serve]'") from exc


class BodyLimit:
    """ASGI middleware: answer 413 once a request body passes ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or {}).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _too_large(send, self.max_bytes)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(send, self.max_bytes)


class _TooLarge(Exception):
    pass


async def _too_large(send, max_bytes: int) -> None:
    body = f'{{"detail": "request body over {max_bytes} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(coder: Coder, token: str | None = None, max_request_bytes: int = 1 << 20, max_reports: int = 256):
    """The ASGI app serving ``coder``; ``token`` (when set) is required as ``Authorization: Bearer``."""
    _require_fastapi()
    from fastapi import Body, Depends, FastAPI, Header, HTTPException
    from pydantic import BaseModel, ConfigDict, Field, StrictStr

    class Report(BaseModel):
        model_config = ConfigDict(extra="ignore")  # gold codes, when sent, are ignored

        id: StrictStr = Field(min_length=1)
        report_text: StrictStr
        exam_description: StrictStr | None = None
        reason_for_exam: StrictStr | None = None
        meta: dict[str, Any] | None = None

    class Batch(BaseModel):
        reports: list[Report] = Field(min_length=1, max_length=max_reports)

    lock = threading.Lock()  # one generation at a time on an in-process model

    def authorized(authorization: str | None = Header(default=None)) -> None:
        if token is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="nyxmed", version=str(coder.version or "unversioned"))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/release", dependencies=[Depends(authorized)])
    def release() -> dict[str, Any]:
        return coder.describe()

    @app.post("/v1/code", dependencies=[Depends(authorized)])
    def code(body: Batch | Report = Body()) -> dict[str, Any]:
        reports = body.reports if isinstance(body, Batch) else [body]
        cases, seen = [], set()
        for i, r in enumerate(reports):
            try:
                case = report_case_from_record(r.model_dump(exclude_none=True))
            except InvalidCase as exc:
                raise HTTPException(422, [{"loc": ["body", "reports", i, exc.field], "msg": exc.reason}]) from exc
            if case.id in seen:
                raise HTTPException(422, [{"loc": ["body", "reports", i, "id"], "msg": f"duplicate id {case.id!r}"}])
            seen.add(case.id)
            cases.append(case)
        with lock:
            coded, uncoded = coder.code(cases)
        return {"results": [c.to_dict() for c in coded],
                "rejected": [{"id": u.id, "field": u.field, "reason": u.reason} for u in uncoded]}

    return BodyLimit(app, max_request_bytes)


def run(app: Any, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve ``app`` with uvicorn until interrupted (127.0.0.1 unless told otherwise)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
