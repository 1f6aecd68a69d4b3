"""OpenAI's files and fine-tuning jobs API on `tuneforge serve`: /v1/files and /v1/fine_tuning/jobs.

`api = JobsAPI(engine, db_url)`, then `create_app(engine, routers=[api.router], body_limits=api.body_limits)`;
the router's lifespan starts and stops the rest with the app, and every route is behind the server's auth
(an ASGI middleware on every path but /health). `tuneforge serve --db URL` does this.

The in-process worker is a thread, not a child process: one command to start and stop, nothing orphaned when
the server dies (the job's lease runs out and the next worker resumes it), and a finished adapter is served
before its job reports `succeeded`. Training then shares the machine with serving; for isolation run
`tuneforge serve --no-jobs-worker` and `tuneforge jobs worker` processes on the same database.

On start (and every 10 minutes for uploads): remove what dead uploads left (`FileStore.sweep`), re-validate jobs
a stopped server left in `validating_files`, serve the fine-tuned model of every succeeded job whose base this
server serves, and (`worker=True`) start the worker thread. Then, every second, serve the models of jobs that other
workers (`tuneforge jobs worker`) finished; and a route that reports a job as succeeded first makes sure its
model is served, so a client that sees `succeeded` can use `fine_tuned_model` at once.

A new job's files are checked in a thread right after it is created (tuneforge's data checks without a tokenizer:
schema, one format, OpenAI's 10-example minimum): the job answers `validating_files`, then becomes `queued`, or
`failed` with `error: {code, message, param}`. Token-level problems fail the job when training starts, with the
data check's code.

Objects are OpenAI's (`openai.types.FileObject`, `fine_tuning.FineTuningJob`, `FineTuningJobEvent`,
`fine_tuning.jobs.FineTuningJobCheckpoint`). One status is beyond the openai SDK's Literal: `paused`, which
OpenAI's API itself returns after `/pause` (the SDK's client parses it as-is). Jobs also carry a `tuneforge`
object: the tuneforge options they were created with plus `run_dir`, the job's run directory.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from tuneforge.ids import new_id
from tuneforge.jobs import recipe, reinforcement
from tuneforge.jobs.files import MULTIPART_OVERHEAD, PURPOSES, STALE_PART_S, FileStore, receive_upload
from tuneforge.jobs.store import SUCCEEDED, VALIDATING, EventRow, CheckpointRow, FileRow, InvalidState, JobRow, \
    Page, Store
from tuneforge.serve import protocol as P

log = logging.getLogger("tuneforge.jobs")

DEFAULT_MAX_FILE_BYTES = 512 << 20  # OpenAI's per-file limit for fine-tuning uploads
SYNC_EVERY_S = 1.0
SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ORGANIZATION = "org-tuneforge"


# --- OpenAI objects ---------------------------------------------------------------------------------------------
def file_object(f: FileRow) -> dict:
    """OpenAI's file object. Files here never expire, so `expires_at` (an integer when present) and the
    deprecated `status_details` (a string when present) are left out rather than sent as null."""
    return {"id": f.id, "object": "file", "bytes": f.bytes, "created_at": f.created_at, "filename": f.filename,
            "purpose": f.purpose, "status": "processed"}


def job_object(j: JobRow) -> dict:
    hp = dict(j.hyperparameters)
    return {"id": j.id, "object": "fine_tuning.job", "created_at": j.created_at, "error": j.error,
            "fine_tuned_model": j.fine_tuned_model, "finished_at": j.finished_at, "hyperparameters": hp,
            "model": j.model, "organization_id": ORGANIZATION, "result_files": list(j.result_files or []),
            "seed": j.seed, "status": j.status, "trained_tokens": j.trained_tokens,
            "training_file": j.training_file, "validation_file": j.validation_file,
            "estimated_finish": j.estimated_finish, "integrations": [], "metadata": j.user_metadata,
            "method": _method_object(j.options, hp),
            "user_provided_suffix": j.suffix, "tuneforge": {**j.options, "run_dir": j.run_dir}}


def _method_object(options: dict, hp: dict) -> dict:
    """OpenAI's `method` of a job: its type from the objective the job trains (supervised unless dpo)."""
    if (options or {}).get("objective") == "grpo":
        return reinforcement.method_object(options, hp)
    kind = "dpo" if (options or {}).get("objective") == "dpo" else "supervised"
    return {"type": kind, kind: {"hyperparameters": hp}}


def event_object(e: EventRow) -> dict:
    return {"id": e.id, "object": "fine_tuning.job.event", "created_at": e.created_at, "level": e.level,
            "message": e.message, "data": e.data or {}, "type": e.type}


def checkpoint_object(c: CheckpointRow) -> dict:
    return {"id": c.id, "object": "fine_tuning.job.checkpoint", "created_at": c.created_at,
            "fine_tuned_model_checkpoint": c.fine_tuned_model_checkpoint, "fine_tuning_job_id": c.job_id,
            "metrics": c.metrics, "step_number": c.step_number}


def list_object(page: Page, render, *, ids: bool = False) -> dict:
    out = {"object": "list", "data": [render(r) for r in page.rows], "has_more": page.has_more}
    if ids:  # required strings in OpenAI's ListFilesResponse: an empty page has "" (not null)
        out.update(first_id=page.rows[0].id if page.rows else "",
                   last_id=page.rows[-1].id if page.rows else "")
    return out


# --- request checks ------------------------------------------------------------------------------------------
def _job_not_found(job_id: str) -> P.OpenAIError:
    return P.not_found(f"No fine-tuning job with id '{job_id}'", param="fine_tuning_job_id", code="job_not_found")


def _file_not_found(file_id: str) -> P.OpenAIError:
    return P.not_found(f"No file with id '{file_id}'", param="file_id", code="file_not_found")


def _metadata(v) -> dict | None:
    """OpenAI's metadata rules: up to 16 string pairs, keys up to 64 characters, values up to 512."""
    if v is None:
        return None
    if not isinstance(v, dict) or len(v) > 16 or not all(
            isinstance(k, str) and isinstance(x, str) and len(k) <= 64 and len(x) <= 512 for k, x in v.items()):
        raise P.bad_request("metadata: at most 16 pairs of strings (keys up to 64 characters, values up to 512)",
                            param="metadata")
    return dict(v)


class JobsAPI:
    """The files and jobs routes (`router`), their database and file store, and optionally a worker thread.

    bases: served base name → what training loads (default: the name itself, e.g. an alias or a directory);
    the serve CLI passes it when --served-model-name renames a base."""

    def __init__(self, engine, db_url: str | None = None, *, worker: bool = True,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, bases: dict[str, str] | None = None,
                 lease_seconds: float | None = None, poll_interval: float = 1.0):
        from tuneforge.db import default_db_url

        self.engine, self.bases, self.max_file_bytes = engine, dict(bases or {}), max_file_bytes
        self.store = Store(db_url or default_db_url())
        self.files = FileStore(self.store.root)
        self.worker = None
        if worker:
            from tuneforge.jobs.worker import DEFAULT_LEASE_SECONDS, Worker

            self.worker = Worker(self.store, lease_seconds=lease_seconds or DEFAULT_LEASE_SECONDS, poll_interval=poll_interval,
                                 before_success=self.serve_before_success)
        self._worker_thread: threading.Thread | None = None
        self._validator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuneforge-validate")
        self._sync_lock = threading.Lock()
        self._synced: set[str] = set()  # fine-tuned models served, or not servable here (logged once)
        self.router = self._routes()

    @property
    def body_limits(self) -> dict[str, int]:
        """For create_app: uploads may be as large as the file limit plus the multipart framing."""
        return {"/v1/files": self.max_file_bytes + MULTIPART_OVERHEAD}

    # --- lifecycle ---
    def start(self) -> None:
        removed = self.files.sweep(self.store.file_ids())
        if removed:
            log.info("removed %d file(s) left by interrupted uploads", len(removed))
        for job in self.store.jobs_in(VALIDATING):
            self._validator.submit(self.validate, job.id)
        self.sync_models()
        if self.worker is not None:
            self._worker_thread = threading.Thread(target=self.worker.run, name="tuneforge-jobs-worker",
                                                   daemon=True)
            self._worker_thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the worker between steps (its job is checkpointed and re-queued) and the validator."""
        if self.worker is not None:
            self.worker.stopping.set()
            self.worker.wake.set()
            if self._worker_thread is not None:
                self._worker_thread.join(timeout)
        self._validator.shutdown(wait=True, cancel_futures=False)

    @asynccontextmanager
    async def lifespan(self, app):
        await run_in_threadpool(self.start)

        async def watch():
            last_sweep = time.monotonic()
            while True:
                await asyncio.sleep(SYNC_EVERY_S)
                try:
                    await run_in_threadpool(self.sync_models)
                    if time.monotonic() - last_sweep > STALE_PART_S:
                        last_sweep = time.monotonic()
                        await run_in_threadpool(self.files.sweep, self.store.file_ids())
                except Exception:  # noqa: BLE001 - keep watching; the next round may succeed
                    log.exception("serving fine-tuned models failed")

        task = asyncio.create_task(watch())
        try:
            yield
        finally:
            task.cancel()
            await run_in_threadpool(self.stop)

    # --- validation and serving ---
    def validate(self, job_id: str) -> None:
        """validating_files → queued, or failed with the first data-check error of its files."""
        job = self.store.get_job(job_id)
        if job is None or job.status != VALIDATING:
            return
        self.store.add_event(job_id, f"Validating training file: {job.training_file}"
                             + (f" and validation file: {job.validation_file}" if job.validation_file else ""))
        try:
            objective = (job.options or {}).get("objective", "sft")
            n, err = recipe.check_training_file(self.files.path(job.training_file), "training_file", objective=objective)
            if err is None and job.validation_file:
                _, err = recipe.check_training_file(self.files.path(job.validation_file), "validation_file", min_examples=1,
                                                    objective=objective)
        except Exception as e:  # noqa: BLE001 - unreadable file: the job fails with the reason, nothing trains
            log.exception("validating %s", job_id)
            n, err = 0, {"code": "invalid_file", "message": f"{type(e).__name__}: {e}", "param": "training_file"}
        if err is not None:
            self.store.fail(job_id, err["code"], err["message"], err["param"], from_status=(VALIDATING,))
        elif self.store.validated(job_id, n) and self.worker is not None:
            self.worker.wake.set()

    def sync_models(self) -> None:
        """Serve the fine-tuned model of each succeeded job whose base this server serves (idempotent; a
        caller arriving while another adds a model waits for it, so `succeeded` always means servable)."""
        with self._sync_lock:
            for job in self.store.jobs_in(SUCCEEDED):
                if job.fine_tuned_model and job.fine_tuned_model not in self._synced:
                    self._serve(job, job.fine_tuned_model, Path(job.run_dir or "") / "adapter")

    def serve_before_success(self, job: JobRow, name: str, adapter: Path) -> None:
        """The in-process worker's hook: the model is served before its job is marked succeeded."""
        with self._sync_lock:
            self._serve(job, name, adapter)

    def _serve(self, job: JobRow, name: str, adapter: Path) -> None:
        base = self.engine.get(job.model)
        if self.engine.get(name) is None and base is not None and base.parent is None:
            try:
                self.engine.add_adapter(name, str(adapter), base=job.model)
                log.info("serving %s", name)
            except Exception as e:  # noqa: BLE001 - e.g. the run directory was deleted
                log.warning("cannot serve %s from %s: %s", name, adapter, e)
                self.store.add_event(job.id, f"This server cannot serve {name}: {e}", level="warn")
        self._synced.add(name)  # served, or not servable here: tried once

    def _job(self, job_id: str) -> JobRow:
        job = self.store.get_job(job_id)
        if job is None:
            raise _job_not_found(job_id)
        if job.status == SUCCEEDED and job.fine_tuned_model not in self._synced:
            self.sync_models()  # waits for a model being added right now
        return job

    def _page(self, fn, *args, **kw) -> Page:
        try:
            return fn(*args, **kw)
        except KeyError as e:
            raise P.not_found(f"after: no object with id '{e.args[0]}'", param="after") from None

    # --- routes ---
    def _routes(self) -> APIRouter:
        router = APIRouter(lifespan=self.lifespan)
        store, files = self.store, self.files

        @router.post("/v1/files")
        async def upload_file(request: Request):
            file_id = new_id("file")
            up = await receive_upload(request, files, file_id, self.max_file_bytes)
            try:
                purpose = up.fields.get("purpose")
                if purpose is None:
                    raise P.bad_request("purpose: missing required parameter", param="purpose",
                                        code="missing_required_parameter")
                if purpose not in PURPOSES:
                    raise P.bad_request(f"purpose: this server stores '{PURPOSES[0]}' files only (got "
                                        f"'{purpose}')", param="purpose", code="invalid_value")
                await run_in_threadpool(files.commit, up.part, file_id)
                row = await run_in_threadpool(store.add_file, id=file_id, filename=up.filename, bytes=up.size,
                                              purpose=purpose, sha256=up.sha256)
            except BaseException:
                up.part.unlink(missing_ok=True)
                files.remove(file_id)
                raise
            return file_object(row)

        @router.get("/v1/files")
        def list_files(after: str | None = None, limit: int = Query(10000, ge=1, le=10000),
                       order: str = Query("desc", pattern="^(asc|desc)$"), purpose: str | None = None):
            page = self._page(store.list_files, after=after, limit=limit, order=order, purpose=purpose)
            return list_object(page, file_object, ids=True)

        def get_row(file_id: str) -> FileRow:
            row = store.get_file(file_id)
            if row is None:
                raise _file_not_found(file_id)
            return row

        @router.get("/v1/files/{file_id}")
        def retrieve_file(file_id: str):
            return file_object(get_row(file_id))

        @router.get("/v1/files/{file_id}/content")
        def file_content(file_id: str):
            row = get_row(file_id)
            return FileResponse(files.path(row.id), media_type="application/octet-stream")

        @router.delete("/v1/files/{file_id}")
        def delete_file(file_id: str):
            get_row(file_id)
            job = store.file_in_use(file_id)
            if job is not None:
                raise P.bad_request(f"file {file_id} is used by fine-tuning job {job}, which has not finished "
                                    "(cancel it first)", param="file_id", code="file_in_use")
            if store.delete_file(file_id):
                files.remove(file_id)
            return {"id": file_id, "object": "file", "deleted": True}

        @router.post("/v1/fine_tuning/jobs")
        def create_job(body: dict):
            job = store.create_job(**self._job_fields(body))
            self._validator.submit(self.validate, job.id)
            return job_object(job)

        @router.get("/v1/fine_tuning/jobs")
        def list_jobs(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100)):
            meta = {k[len("metadata["):-1]: v for k, v in request.query_params.items()
                    if k.startswith("metadata[") and k.endswith("]")}
            page = self._page(store.list_jobs, after=after, limit=limit, metadata=meta)
            if any(j.status == SUCCEEDED and j.fine_tuned_model not in self._synced for j in page.rows):
                self.sync_models()
            return list_object(page, job_object)

        @router.get("/v1/fine_tuning/jobs/{job_id}")
        def retrieve_job(job_id: str):
            return job_object(self._job(job_id))

        def act(job_id: str, action) -> dict:
            try:
                job = action(job_id)
            except KeyError:
                raise _job_not_found(job_id) from None
            except InvalidState as e:
                raise P.bad_request(str(e), param="fine_tuning_job_id", code="invalid_job_state") from None
            if self.worker is not None:
                self.worker.wake.set()
            return job_object(job)

        @router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
        def cancel_job(job_id: str):
            return act(job_id, store.cancel)

        @router.post("/v1/fine_tuning/jobs/{job_id}/pause")
        def pause_job(job_id: str):
            return act(job_id, store.pause)

        @router.post("/v1/fine_tuning/jobs/{job_id}/resume")
        def resume_job(job_id: str):
            return act(job_id, store.resume)

        @router.get("/v1/fine_tuning/jobs/{job_id}/events")
        def list_events(job_id: str, after: str | None = None, limit: int = Query(20, ge=1, le=100)):
            self._job(job_id)
            return list_object(self._page(store.list_events, job_id, after=after, limit=limit), event_object)

        @router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
        def list_checkpoints(job_id: str, after: str | None = None, limit: int = Query(10, ge=1, le=100)):
            self._job(job_id)
            return list_object(self._page(store.list_checkpoints, job_id, after=after, limit=limit),
                               checkpoint_object)

        def graders_call(fn, body: dict):
            try:
                return fn(body)
            except reinforcement.RLSpecError as e:
                raise P.bad_request(e.message, param=e.param, code="invalid_value") from None

        @router.post("/v1/fine_tuning/alpha/graders/run")
        def run_grader(body: dict):
            return graders_call(reinforcement.run_grader, body)

        @router.post("/v1/fine_tuning/alpha/graders/validate")
        def validate_grader(body: dict):
            return graders_call(reinforcement.validate_grader, body)

        return router

    def _job_fields(self, body: dict) -> dict:
        """The row of a new job from the request body; any problem is a 400 naming its field."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise P.bad_request("model: missing required parameter", param="model", code="missing_required_parameter")
        served = self.engine.get(model)
        if served is None:
            bases = ", ".join(m.name for m in self.engine.models() if m.parent is None)
            raise P.not_found(f"The model '{model}' is not served here; fine-tuning takes one of this server's "
                              f"base models: {bases}", param="model", code="model_not_found")
        if served.parent is not None:
            raise P.bad_request(f"model: '{model}' is an adapter on '{served.parent}'; fine-tune its base instead",
                                param="model", code="invalid_value")
        files = {}
        for key in ("training_file", "validation_file"):
            fid = body.get(key)
            if fid is None and key == "validation_file":
                continue
            if not isinstance(fid, str):
                raise P.bad_request(f"{key}: missing required parameter", param=key,
                                    code="missing_required_parameter")
            row = self.store.get_file(fid)
            if row is None:
                raise P.bad_request(f"invalid {key}: no file with id '{fid}' (upload it with POST /v1/files)",
                                    param=key, code="file_not_found")
            if row.purpose != "fine-tune":
                raise P.bad_request(f"invalid {key}: file '{fid}' has purpose '{row.purpose}', not 'fine-tune'",
                                    param=key, code="invalid_file_purpose")
            files[key] = fid
        suffix = body.get("suffix")
        if suffix is not None and (not isinstance(suffix, str) or not SUFFIX.match(suffix)):
            raise P.bad_request("suffix: 1 to 64 letters, digits, '-' or '_'", param="suffix", code="invalid_value")
        seed = body.get("seed")
        if seed is None:
            seed = secrets.randbelow(2**31)
        elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise P.bad_request("seed: an integer in [0, 2147483647]", param="seed", code="invalid_value")
        if body.get("integrations"):
            raise P.bad_request("integrations: not supported by this server (metrics are in the job's events and "
                                "its run directory; see `report_to` in the tuneforge options)",
                                param="integrations")
        try:
            hp, _ = recipe.hyperparameters_from(body)
            options = recipe.options_from(body)
            objective = recipe.OBJECTIVE_OF[recipe.method_type(body)]
            if options.get("objective", objective) != objective:
                raise recipe.SpecError(f"tuneforge.objective: '{options['objective']}' contradicts method.type "
                                       f"'{recipe.method_type(body)}'", "tuneforge.objective")
            if objective != "sft":
                options = {**options, "objective": objective}
            if objective == "grpo":
                if "grader" in options:
                    raise recipe.SpecError("tuneforge.grader: set by method.reinforcement.grader", "tuneforge.grader")
                spec = reinforcement.grader_from(body)
                options["grader"] = str(reinforcement.save_grader(self.store.root, spec))
        except (recipe.SpecError, reinforcement.RLSpecError) as e:
            raise P.bad_request(e.message, param=e.param, code="invalid_value") from None
        return {"model": model, "base": self.bases.get(model, model), **files, "suffix": suffix, "seed": seed,
                "user_metadata": _metadata(body.get("metadata")), "hyperparameters": hp,
                "options": options}


def served_bases(target: str, served_model_name: str | None = None) -> dict[str, str]:
    """For `tuneforge serve TARGET`: each served base name → what training loads (they differ when
    --served-model-name renames a model, or TARGET is a run whose merged model/ is served)."""
    from tuneforge.serve.loading import plan_target

    return {p.name: p.base for p in plan_target(target, served_model_name) if p.adapter is None}
