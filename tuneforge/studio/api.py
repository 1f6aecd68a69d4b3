"""The tuneforge routes the studio page needs beyond OpenAI's API, under one prefix: `/v1/tuneforge`.

Everything the page does goes through the public HTTP API (OpenAI's files, fine-tuning jobs, models and chat
completions, plus these), so a script with `curl` or the openai SDK (`client.post("/tuneforge/...",
cast_to=object)`) can do the same. Every route is behind the server's API key (the app's auth middleware covers
every path but an exact allow-list) and answers errors in OpenAI's shape (`{"error": {"message", "type",
"param", "code"}}`): a data problem names the uploaded file, the line and the field.

Routes (bodies are JSON; `file_id` is an uploaded `/v1/files` id; `model` a served base name, default the first):

| route | what | CLI twin |
|---|---|---|
| `POST /v1/tuneforge/data/check` `{file_id, model?, max_seq_len?}` | the data-check report: errors with line numbers, token-length histogram, truncation, duplicates, label balance | `data check --json` |
| `POST /v1/tuneforge/data/advise` `{file_id, model?, task?, sample?=0}` | go / no-go / maybe with reasons, method, hyperparameters | `advise --json` |
| `POST /v1/tuneforge/data/cost` `{file_id, model?, hardware?="cpu", bench_steps?=2, config?, background?}` | tokens, steps, FLOPs, memory, time and money (`background: true`: a task, since measuring a real base on CPU takes minutes) | `cost --json` |
| `GET /v1/tuneforge/train/schema` | every config key: type, default, description, choices, bounds; which keys a job sets itself | `train --help-config` |
| `POST /v1/tuneforge/train/defaults` `{file_id, model?, tuneforge?}` | what a job (and `train`) would choose for this file, each with its reason, and the job request that launches it | `train`'s printed choices |
| `POST /v1/tuneforge/train/validate` `{hyperparameters?, tuneforge?}` | `{ok, errors: [{param, message}]}`: every bad field, with the messages job creation would answer | `train --key value` |
| `GET /v1/tuneforge/runs` | runs (the jobs' and `--runs-dir`'s) | `runs list` |
| `GET /v1/tuneforge/runs/{run}` | one run: config, info, metrics rows (loss curves), eval, exports, lineage | `runs show` |
| `GET /v1/tuneforge/runs/{a}/compare/{b}` | hyperparameters and metrics that differ | `runs diff` |
| `POST /v1/tuneforge/runs/{run}/evals` `{file_id, baseline?="base", limit?, max_new_tokens?}` | a task: base vs tuned with CIs | `eval --baseline base` |
| `GET /v1/tuneforge/runs/{run}/eval` | the run's eval.json summary: metrics, deltas with CIs, worst examples | `report` |
| `GET /v1/tuneforge/runs/{run}/human-eval` | the blind A/B sheet of that eval: a zip of CSV, HTML form and key | `human-eval export` |
| `POST /v1/tuneforge/runs/{run}/exports` `{format}` | a task: merged / int8 / int4 / onnx / gguf-f16 / gguf-q8_0, verified | `export ...` |
| `GET /v1/tuneforge/runs/{run}/exports` | each export: manifest, verify table, download link | |
| `GET /v1/tuneforge/runs/{run}/exports/{format}/content` | the export: the .gguf file, or a zip of the directory | |
| `GET /v1/tuneforge/tasks[/{task_id}]` | background tasks (eval, export): poll until `succeeded` / `failed` | |

A run's id is its directory name (a job's run is named after the job id). Long work (eval, export) runs as a
background task (tasks.py: one at a time, at most 8 waiting, 429 beyond); the rest runs in a thread per request.
"""

from __future__ import annotations

import difflib
import re
import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from tuneforge.errors import TuneforgeError
from tuneforge.serve import protocol as P
from tuneforge.studio.tasks import Busy, TaskRunner

PREFIX = "/v1/tuneforge"
RUN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
EXPORT_FORMATS = ("merged", "int8", "int4", "onnx", "gguf-f16", "gguf-q8_0")
WORST = 5  # worst examples shown per eval
MAX_EVAL_EXAMPLES = 2000


def _body_field(body: dict, key: str, kind, default=None, *, required: bool = False):
    v = body.get(key, default)
    if v is None:
        if required:
            raise P.bad_request(f"{key}: missing required parameter", param=key, code="missing_required_parameter")
        return None
    if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise P.bad_request(f"{key}: expected an integer, got {v!r}", param=key, code="invalid_value")
    if kind is str and not isinstance(v, str):
        raise P.bad_request(f"{key}: expected a string, got {v!r}", param=key, code="invalid_value")
    if kind is bool and not isinstance(v, bool):
        raise P.bad_request(f"{key}: expected true or false, got {v!r}", param=key, code="invalid_value")
    if kind is dict and not isinstance(v, dict):
        raise P.bad_request(f"{key}: expected an object", param=key, code="invalid_value")
    return v


def _tuneforge_error(e: Exception, param: str | None = None) -> P.OpenAIError:
    """A library error (bad data, bad config, missing model) as a 400 naming what was wrong."""
    code = getattr(e, "code", None) or "invalid_value"
    return P.bad_request(str(e).splitlines()[0], param=param or getattr(e, "field", None), code=code)


async def _in_threadpool(fn):
    """Run blocking work (a data check, advice, a cost benchmark) off the event loop; its errors become 400s."""
    try:
        return await run_in_threadpool(fn)
    except TuneforgeError as e:
        raise _tuneforge_error(e) from None


def config_schema() -> dict:
    """Every TrainConfig key for a form: type, default, description, choices, bounds (pydantic's JSON schema,
    flattened), and which of them a fine-tuning job sets itself."""
    from tuneforge.config import TrainConfig
    from tuneforge.jobs import recipe

    schema = TrainConfig.model_json_schema()
    keys = []
    for name, prop in schema["properties"].items():
        options = prop.get("anyOf", [prop])
        types, choices = [], []
        bounds = {k: prop[k] for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in prop}
        for o in options:
            if "enum" in o:
                choices += o["enum"]
            elif "const" in o:
                choices.append(o["const"])
            elif o.get("type") == "array":
                types.append("array")
                choices += o.get("items", {}).get("enum", [])
            elif "type" in o:
                types.append(o["type"])
                bounds.update({k: o[k] for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
                               if k in o})
        keys.append({"name": name, "types": types or ["string"], "choices": choices, "default": prop.get("default"),
                     "description": prop.get("description", ""), **bounds,
                     "set_by_job": name in recipe.JOB_KEYS})
    return {"object": "tuneforge.config_schema", "keys": keys, "job_keys": list(recipe.JOB_KEYS),
            "servable_methods": list(recipe.SERVABLE_METHODS), "hyperparameters": {
                k: {"minimum": lo, "maximum": hi} for k, (lo, hi) in recipe.LIMITS.items()}}


def validate_job_fields(body: dict) -> list[dict]:
    """Every bad field of a job request's hyperparameters and `tuneforge` options, each with the message job
    creation would answer (recipe.hyperparameters_from / options_from), not just the first."""
    from tuneforge.jobs import recipe

    errors = []
    hp = body.get("hyperparameters") or {}
    if not isinstance(hp, dict):
        return [{"param": "hyperparameters", "message": "hyperparameters: expected an object"}]
    for k, v in hp.items():
        try:
            recipe.hyperparameters_from({"hyperparameters": {k: v}})
        except recipe.SpecError as e:
            errors.append({"param": e.param, "message": e.message})
    opts = body.get("tuneforge") or {}
    if not isinstance(opts, dict):
        return errors + [{"param": "tuneforge", "message": "tuneforge: expected an object"}]
    for k, v in opts.items():
        try:
            recipe.options_from({"tuneforge": {k: v}})
        except recipe.SpecError as e:
            errors.append({"param": e.param, "message": e.message})
    if not errors and opts:
        try:  # keys that are fine alone but not together
            recipe.options_from({"tuneforge": opts})
        except recipe.SpecError as e:
            errors.append({"param": e.param, "message": e.message})
    return errors


def train_defaults(path: Path, base: str, options: dict) -> dict:
    """What a job on this file would train with, each value with its reason: the method (`methods.choose`), the
    learning rate (train/auto.py by method and base size), the job's epochs ("auto": OpenAI's rule, recipe.py)
    and `tuneforge train`'s own epochs for the same file (train/auto.py), beside every other key's default."""
    from tuneforge import methods
    from tuneforge.advise.cost import model_shape
    from tuneforge.config import TrainConfig
    from tuneforge.data.load import load_samples
    from tuneforge.jobs import recipe
    from tuneforge.models.load import default_device, resolve
    from tuneforge.train import auto
    from tuneforge.train.objectives.sft import holdout

    cfg = TrainConfig(**{**recipe.JOB_DEFAULTS, "method": "auto", **options, "base": base, "data": str(path)})
    samples = load_samples(path)
    train, _ = holdout(samples, cfg.val_split, cfg.seed)
    values: dict[str, dict] = {}
    if cfg.method == "auto":
        method, why = methods.choose(resolve(base), default_device())
    else:
        method, why = cfg.method, f"method {cfg.method}: as given"
    values["method"] = {"value": method, "reason": why}
    n_params = model_shape(base).params
    lr, why = auto.learning_rate(method, n_params)
    values["learning_rate"] = {"value": lr, "reason": why}
    n_epochs = recipe.auto_epochs(len(samples))
    values["n_epochs"] = {"value": n_epochs, "reason": (
        f"n_epochs {n_epochs} (auto, the jobs API's rule): {len(samples)} examples; OpenAI's 3 epochs, more for "
        f"small files so examples x epochs reaches {recipe.MIN_TARGET_EXAMPLES}, fewer above "
        f"{recipe.MAX_TARGET_EXAMPLES:,}")}
    bs = cfg.per_device_train_batch_size
    values["batch_size"] = {"value": bs, "reason": f"batch_size {bs} (auto): tuneforge's default micro-batch"}
    ep, why = auto.epochs(len(train), bs, cfg.gradient_accumulation_steps)
    values["train_num_train_epochs"] = {"value": ep, "reason": "tuneforge train would choose " + why}
    config = {k: getattr(cfg, k) for k in TrainConfig.model_fields if k not in recipe.JOB_KEYS}
    config["method"] = method
    return {"object": "tuneforge.train_defaults", "n_examples": len(samples), "n_train": len(train),
            "base_parameters": n_params, "values": values, "config": config,
            "job": {"training_file": None, "hyperparameters": {"n_epochs": n_epochs, "batch_size": bs,
                                                               "learning_rate_multiplier": 1.0},
                    "tuneforge": {"method": method}}}


def worst_examples(result: dict, n: int = WORST) -> list[dict]:
    """The tuned model's answers furthest from the reference (character similarity), with the base's beside."""
    scored = []
    for ex in result.get("examples", []):
        pred = str(ex.get("tuned_prediction", ""))
        ref = str(ex.get("reference", ""))
        sim = difflib.SequenceMatcher(None, pred.strip(), ref.strip()).ratio()
        scored.append((sim, ex))
    scored.sort(key=lambda t: t[0])
    return [{**ex, "similarity": round(sim, 3)} for sim, ex in scored[:n] if sim < 1.0]


def eval_summary(result: dict) -> dict:
    return {"object": "tuneforge.eval", "task": result.get("task"), "mode": result.get("mode"),
            "n_examples": result.get("n_examples"), "models": result.get("models", {}),
            "delta": result.get("delta", {}), "worst": worst_examples(result)}


class StudioAPI:
    """The /v1/tuneforge routes over a JobsAPI's store (uploaded files, the jobs' runs) and extra run roots.

    runs_dirs: more folders of run directories to list (e.g. `runs/` of `tuneforge train`)."""

    def __init__(self, jobs, *, runs_dirs=(), tasks: TaskRunner | None = None):
        self.jobs = jobs
        self.roots = [jobs.store.root / "runs", *[Path(d) for d in runs_dirs]]
        self.tasks = tasks or TaskRunner()
        self.router = self._routes()

    # --- lookups ---
    def default_base(self) -> str:
        bases = list(self.jobs.bases.values())
        if bases:
            return bases[0]
        served = [m.name for m in self.jobs.engine.models() if m.parent is None]
        if not served:
            raise P.bad_request("model: this server serves no base model", param="model")
        return served[0]

    def base_for(self, body: dict) -> str:
        model = _body_field(body, "model", str)
        if model is None:
            return self.default_base()
        if model in self.jobs.bases:
            return self.jobs.bases[model]
        m = self.jobs.engine.get(model)
        if m is None or m.parent is not None:
            raise P.bad_request(f"model: '{model}' is not a base model this server serves", param="model",
                                code="model_not_found")
        return model

    def file_path(self, body: dict, key: str = "file_id") -> tuple[Path, str]:
        fid = _body_field(body, key, str, required=True)
        row = self.jobs.store.get_file(fid)
        if row is None:
            raise P.not_found(f"No file with id '{fid}'", param=key, code="file_not_found")
        return self.jobs.files.path(fid), row.filename

    def run_dir(self, run_id: str) -> Path:
        from tuneforge.run import run_status

        if RUN_ID.match(run_id) and ".." not in run_id:
            for root in self.roots:
                d = root / run_id
                if d.is_dir() and run_status(d):
                    return d
        raise P.not_found(f"No run with id '{run_id}'", param="run", code="run_not_found")

    def _submit(self, kind: str, params: dict, fn, names: dict[str, str] | None = None):
        """Start `fn` as a task; `names` (stored path → upload's filename) keep server paths out of its error."""
        def run() -> dict:
            try:
                return fn()
            except TuneforgeError as e:
                msg = str(e)
                for stored, name in (names or {}).items():
                    msg = msg.replace(stored, name)
                err = TuneforgeError(msg)
                err.code = getattr(e, "code", None)
                raise err from None

        try:
            return self.tasks.submit(kind, params, run).to_dict()
        except Busy:
            raise P.too_many_requests(30, f"{self.tasks.max_pending} tasks are already waiting; try again "
                                          "when one finishes") from None

    # --- routes ---
    def _routes(self) -> APIRouter:  # noqa: C901 - one closure per route, read top to bottom
        router = APIRouter(prefix=PREFIX)

        async def body_of(request: Request) -> dict:
            return P.parse_json_body(await request.body())

        def named(report: dict, stored: Path, filename: str) -> dict:
            """The stored path (files/file-….jsonl) is the server's business: messages name the upload."""
            import json

            text = json.dumps(report).replace(json.dumps(str(stored))[1:-1], filename)
            return json.loads(text)

        @router.post("/data/check")
        async def data_check(request: Request):
            body = await body_of(request)
            path, filename = self.file_path(body)
            base = self.base_for(body)
            max_seq_len = _body_field(body, "max_seq_len", int, 1024)
            if max_seq_len < 8:
                raise P.bad_request("max_seq_len: at least 8", param="max_seq_len", code="invalid_value")

            def run() -> dict:
                from tuneforge.data.validate import check_file
                from tuneforge.models.load import load_tokenizer

                rep = check_file(path, tokenizer=load_tokenizer(base), max_seq_len=max_seq_len)
                return {"object": "tuneforge.data_check", "file_id": body["file_id"], "filename": filename,
                        **named(rep.to_dict(), path, filename), "path": filename}

            return await _in_threadpool(run)

        @router.post("/data/advise")
        async def data_advise(request: Request):
            body = await body_of(request)
            path, filename = self.file_path(body)
            base = self.base_for(body)
            sample = _body_field(body, "sample", int, 0)
            task = _body_field(body, "task", str)
            if not 0 <= sample <= 200:
                raise P.bad_request("sample: an integer in [0, 200]", param="sample", code="invalid_value")

            def run() -> dict:
                from tuneforge.advise.advisor import advise

                advice = advise(path, base=base, task=task, sample=sample)
                return {"object": "tuneforge.advice", "file_id": body["file_id"],
                        **named(advice.to_dict(), path, filename)}

            return await _in_threadpool(run)

        @router.post("/data/cost")
        async def data_cost(request: Request):
            body = await body_of(request)
            path, filename = self.file_path(body)
            base = self.base_for(body)
            hardware = _body_field(body, "hardware", str, "cpu")
            bench_steps = _body_field(body, "bench_steps", int, 2)
            if not 1 <= bench_steps <= 20:
                raise P.bad_request("bench_steps: an integer in [1, 20]", param="bench_steps", code="invalid_value")
            config = _body_field(body, "config", dict, {})
            errs = validate_job_fields({"tuneforge": config})
            if errs:
                raise P.bad_request(errs[0]["message"], param=errs[0]["param"], code="invalid_value")

            def run() -> dict:
                from tuneforge.advise.cost import estimate, load_prices
                try:  # main moved the estimate store to tuneforge.finish (house, #21)
                    from tuneforge.finish import remember
                except ImportError:
                    from tuneforge.advise.cost import remember
                from tuneforge.config import TrainConfig
                from tuneforge.jobs import recipe

                cfg = TrainConfig(**{**recipe.JOB_DEFAULTS, **config, "base": base, "data": str(path)})
                est = estimate(cfg, hardware=hardware, prices=load_prices(), bench_steps=bench_steps)
                remember(est)
                return {"object": "tuneforge.cost", "file_id": body["file_id"], **named(est, path, filename)}

            if _body_field(body, "background", bool, False):  # minutes on a real base: poll the task
                return self._submit("cost", {"file_id": body["file_id"], "hardware": hardware}, run,
                                    names={str(path): filename})
            return await _in_threadpool(run)

        @router.get("/train/schema")
        def train_schema():
            return config_schema()

        @router.post("/train/defaults")
        async def defaults(request: Request):
            body = await body_of(request)
            path, filename = self.file_path(body)
            base = self.base_for(body)
            opts = _body_field(body, "tuneforge", dict, {})
            errs = validate_job_fields({"tuneforge": opts})
            if errs:
                raise P.bad_request(errs[0]["message"], param=errs[0]["param"], code="invalid_value")
            try:
                out = await run_in_threadpool(train_defaults, path, base, opts)
            except TuneforgeError as e:
                raise _tuneforge_error(e) from None
            out["job"]["training_file"] = body["file_id"]
            out["job"]["model"] = _body_field(body, "model", str) or next(iter(self.jobs.bases), base)
            return named(out, path, filename)

        @router.post("/train/validate")
        async def validate(request: Request):
            errors = validate_job_fields(await body_of(request))
            return {"object": "tuneforge.validation", "ok": not errors, "errors": errors}

        @router.get("/runs")
        def runs():
            from tuneforge.registry import list_runs

            rows = []
            for root in self.roots:
                if root.is_dir():
                    rows += [{**r, "id": Path(r["path"]).name} for r in list_runs(root)]
            return {"object": "list", "data": rows}

        @router.get("/runs/{run_id}")
        def run_show(run_id: str):
            from tuneforge.registry import show_run
            from tuneforge.run import read_metrics

            d = self.run_dir(run_id)
            out = show_run(d)
            out["object"] = "tuneforge.run"
            out["metrics_rows"] = read_metrics(d)
            out["exports"] = self.exports_of(run_id, d)
            out["lineage_ids"] = [Path(p).name for p in out.get("lineage", [])]
            return out

        @router.get("/runs/{a}/compare/{b}")
        def compare(a: str, b: str):
            from tuneforge.registry import diff_runs

            return {"object": "tuneforge.run_diff", "a": a, "b": b, **diff_runs(self.run_dir(a), self.run_dir(b))}

        @router.post("/runs/{run_id}/evals")
        async def start_eval(run_id: str, request: Request):
            d = self.run_dir(run_id)
            body = await body_of(request)
            path, filename = self.file_path(body)
            baseline = _body_field(body, "baseline", str, "base")
            limit = _body_field(body, "limit", int, 50)
            max_new_tokens = _body_field(body, "max_new_tokens", int, 64)
            if not 1 <= limit <= MAX_EVAL_EXAMPLES:
                raise P.bad_request(f"limit: an integer in [1, {MAX_EVAL_EXAMPLES}]", param="limit",
                                    code="invalid_value")
            if not 1 <= max_new_tokens <= 1024:
                raise P.bad_request("max_new_tokens: an integer in [1, 1024]", param="max_new_tokens",
                                    code="invalid_value")
            if baseline not in ("base", "none"):
                baseline_dir = self.run_dir(baseline)  # another run of this server, by id
            else:
                baseline_dir = None

            def run() -> dict:
                from tuneforge.eval.harness import evaluate_file, save_eval

                res = evaluate_file(str(d), str(path), progress=False, limit=limit, max_new_tokens=max_new_tokens,
                                    baseline=(str(baseline_dir) if baseline_dir else
                                              None if baseline == "none" else "base"))
                res["data"] = filename
                save_eval(str(d), res)
                return eval_summary(res)

            return self._submit("eval", {"run": run_id, "file_id": body["file_id"], "baseline": baseline,
                                         "limit": limit, "max_new_tokens": max_new_tokens}, run,
                                names={str(path): filename})

        @router.get("/runs/{run_id}/eval")
        def run_eval(run_id: str):
            from tuneforge.run import read_json

            d = self.run_dir(run_id)
            if not (d / "eval.json").is_file():
                raise P.not_found(f"run '{run_id}' has no evaluation yet (POST {PREFIX}/runs/{run_id}/evals)",
                                  param="run", code="eval_not_found")
            return eval_summary(read_json(d / "eval.json"))

        @router.get("/runs/{run_id}/human-eval")
        def human_eval(run_id: str):
            """The blind A/B sheet of the run's eval (`human-eval export`): a zip of the CSV, the HTML form
            and the key (keep the key from the raters)."""
            from tuneforge.eval.human import export_sheet

            d = self.run_dir(run_id)
            if not (d / "eval.json").is_file():
                raise P.not_found(f"run '{run_id}' has no evaluation yet", param="run", code="eval_not_found")
            tmp = Path(tempfile.mkdtemp(prefix="tuneforge-human-"))
            try:
                export_sheet(d / "eval.json", tmp / "sheet")
            except TuneforgeError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                raise _tuneforge_error(e, "run") from None
            archive = shutil.make_archive(str(tmp / f"{run_id}-human-eval"), "zip", tmp / "sheet")
            return FileResponse(archive, media_type="application/zip", filename=Path(archive).name,
                                background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))

        @router.post("/runs/{run_id}/exports")
        async def start_export(run_id: str, request: Request):
            d = self.run_dir(run_id)
            body = await body_of(request)
            fmt = _body_field(body, "format", str, required=True)
            if fmt not in EXPORT_FORMATS:
                raise P.bad_request(f"format: '{fmt}' is not one of {', '.join(EXPORT_FORMATS)}", param="format",
                                    code="invalid_value")
            try:
                from tuneforge.export.merge import require_mergeable
                from tuneforge.export.pipeline import check_installed
                from tuneforge.run import read_run

                require_mergeable(read_run(d))
                if fmt != "merged":
                    check_installed(fmt)
            except TuneforgeError as e:
                raise _tuneforge_error(e, "format") from None

            def run() -> dict:
                if fmt == "merged":
                    from tuneforge.export.merge import merge
                    from tuneforge.export.verify import verify

                    out = merge(d)
                    if (out / "manifest.json").is_file():
                        verify(d, out, progress=False)  # recorded in the manifest
                else:
                    from tuneforge.export.pipeline import export_run

                    out = export_run(d, fmt, progress=False).path
                return self.export_object(run_id, d, fmt, out)

            return self._submit("export", {"run": run_id, "format": fmt}, run)

        @router.get("/runs/{run_id}/exports")
        def list_exports(run_id: str):
            return {"object": "list", "data": self.exports_of(run_id, self.run_dir(run_id))}

        @router.get("/runs/{run_id}/exports/{fmt}/content")
        def download(run_id: str, fmt: str):
            d = self.run_dir(run_id)
            if fmt not in EXPORT_FORMATS:
                raise P.not_found(f"No export format '{fmt}'", param="format", code="export_not_found")
            out = self.export_dir(d, fmt)
            if not (out / "manifest.json").is_file():
                raise P.not_found(f"run '{run_id}' has no {fmt} export", param="format", code="export_not_found")
            ggufs = sorted(out.glob("*.gguf"))
            if fmt.startswith("gguf") and len(ggufs) == 1:
                return FileResponse(ggufs[0], media_type="application/octet-stream",
                                    filename=f"{run_id}-{ggufs[0].name}")
            tmp = Path(tempfile.mkdtemp(prefix="tuneforge-zip-"))
            archive = shutil.make_archive(str(tmp / f"{run_id}-{fmt}"), "zip", out)
            return FileResponse(archive, media_type="application/zip", filename=Path(archive).name,
                                background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))

        @router.get("/tasks")
        def tasks():
            return {"object": "list", "data": [t.to_dict() for t in self.tasks.list()]}

        @router.get("/tasks/{task_id}")
        def task(task_id: str):
            t = self.tasks.get(task_id)
            if t is None:
                raise P.not_found(f"No task with id '{task_id}'", param="task_id", code="task_not_found")
            return t.to_dict()

        return router

    # --- exports ---
    @staticmethod
    def export_dir(d: Path, fmt: str) -> Path:
        from tuneforge.export.manifest import default_dir

        return d / "model" if fmt == "merged" else default_dir(d, fmt)

    def export_object(self, run_id: str, d: Path, fmt: str, out: Path) -> dict:
        from tuneforge.run import read_json

        man = read_json(out / "manifest.json") if (out / "manifest.json").is_file() else {}
        ver = man.get("verify")
        return {"object": "tuneforge.export", "run": run_id, "format": fmt, "path": str(out.relative_to(d)),
                "manifest": {k: v for k, v in man.items() if k != "verify"}, "verify": ver,
                "passed": ver.get("passed") if isinstance(ver, dict) else None,
                "download_url": f"{PREFIX}/runs/{run_id}/exports/{fmt}/content"}

    def exports_of(self, run_id: str, d: Path) -> list[dict]:
        out = []
        for fmt in EXPORT_FORMATS:
            e = self.export_dir(d, fmt)
            if (e / "manifest.json").is_file():
                out.append(self.export_object(run_id, d, fmt, e))
        return out
