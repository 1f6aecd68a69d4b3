"""User feedback on answers: `POST /v1/feedback`, stored with a link to the request it rates (table `feedback`).

Body (JSON): `id` — the `id` of a chat completion or completion this server answered; then either `score`, a
number from 0 (worst) to 1 (best), or `thumbs`: "up" (stored as score 1) or "down" (score 0); optionally
`comment` and `correction` (the answer the model should have given). An id not in the request log is a 404,
a score outside [0, 1] (or both/neither of score and thumbs) a 400, both with OpenAI's error body.

    curl -X POST http://127.0.0.1:8000/v1/feedback -H 'Content-Type: application/json' \\
         -d '{"id": "chatcmpl-...", "thumbs": "down", "correction": "SELECT * FROM users;"}'

Comment and correction pass through the log's redactor; with `--log-content hash` only their sha256 is kept.
Feedback rows are deleted with their request (retention). Scores feed the dashboard, the `feedback_score`
drift signal and `tuneforge monitor export-feedback`.
"""

import hashlib  # no `from __future__ import annotations`: FastAPI reads the route's annotations at runtime
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Float, ForeignKey, String, Text, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.db import TableBase
from tuneforge.ids import new_id
from tuneforge.monitor.requests import RequestLog, RequestRow
from tuneforge.serve import protocol as P

SCORE_RANGE = (0.0, 1.0)
PENDING_WAIT_S = 10.0  # a request answered a moment ago may still be on the writer's queue


class FeedbackRow(TableBase):
    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), ForeignKey("request_log.id", ondelete="CASCADE"),
                                            index=True)
    created: Mapped[float] = mapped_column(Float, index=True)
    score: Mapped[float] = mapped_column(Float)  # 0..1 (thumbs up = 1, down = 0)
    thumbs: Mapped[str | None] = mapped_column(String(8))
    comment: Mapped[str | None] = mapped_column(Text)
    correction: Mapped[str | None] = mapped_column(Text)


Score = Annotated[float, Field(ge=SCORE_RANGE[0], le=SCORE_RANGE[1], strict=True, allow_inf_nan=False)]


class FeedbackRequest(BaseModel):
    """Unknown fields are refused (a misspelt `correction` would otherwise be lost without a word)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    score: Score | None = None
    thumbs: Literal["up", "down"] | None = None
    comment: str | None = Field(None, max_length=20000)
    correction: str | None = Field(None, max_length=200000)


def _check(req: FeedbackRequest) -> float:
    if (req.score is None) == (req.thumbs is None):
        raise P.bad_request("give either 'score' (a number from 0 to 1) or 'thumbs' ('up' or 'down')",
                            param="score", code="invalid_value")
    return req.score if req.score is not None else (1.0 if req.thumbs == "up" else 0.0)


def _keep(text: str | None, log: RequestLog) -> str | None:
    if text is None or not text.strip():
        return None
    text = log.redact(text)
    return text if log.content == "full" else "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def add_feedback(log: RequestLog, req: FeedbackRequest) -> dict:
    """Store one feedback (blocking: run it off the event loop). Raises OpenAIError 400/404."""
    score = _check(req)
    if log.is_pending(req.id):
        log.flush(PENDING_WAIT_S)
    with log.engine.begin() as conn:
        if conn.execute(select(RequestRow.id).where(RequestRow.id == req.id)).first() is None:
            raise P.not_found(f"No completion with id '{req.id}' in the request log (feedback needs the 'id' of "
                              "a response this server gave)", param="id", code="completion_not_found")
        row = dict(id=new_id("fb"), request_id=req.id, created=time.time(), score=float(score),
                   thumbs=req.thumbs, comment=_keep(req.comment, log), correction=_keep(req.correction, log))
        conn.execute(insert(FeedbackRow), [row])
    return {"id": row["id"], "object": "feedback", "created": int(row["created"]), "completion_id": req.id,
            "score": row["score"], "thumbs": row["thumbs"], "comment": row["comment"],
            "correction": row["correction"]}


def feedback_router(log: RequestLog):
    """The `POST /v1/feedback` route, for `create_app(routers=[...])`."""
    from fastapi import APIRouter, Request
    from starlette.concurrency import run_in_threadpool

    router = APIRouter()

    @router.post("/v1/feedback")
    async def post_feedback(request: Request):
        body = P.parse_json_body(await request.body())
        req = P.validate(FeedbackRequest, body)
        return await run_in_threadpool(add_feedback, log, req)

    return router
