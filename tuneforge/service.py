"""The whole server `tuneforge serve` runs: an engine, the OpenAI routes, the jobs API, monitoring and the studio
on one app.

It sits above `serve/`, `jobs/`, `monitor/` and `studio/` (each imports only what is below it; this module wires them), so
the CLI only parses flags and calls `build_server` then `run_server`; tests and benches can build the same app.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

from tuneforge.errors import TuneforgeError
from tuneforge.monitor.attach import MonitorSettings
from tuneforge.run import DEFAULT_MAX_NEW_TOKENS


@dataclass
class ServerOptions:
    """Every `tuneforge serve` setting (flag names as `vllm serve`'s where vLLM has one)."""

    target: str  # run dir, merged model dir, alias or hub id
    lora_modules: list[str] = field(default_factory=list)  # NAME=RUN_OR_ADAPTER_DIR
    served_model_name: str | None = None
    api_keys: list[str] = field(default_factory=list)  # empty: TUNEFORGE_API_KEYS, else no auth
    engine: str = "auto"  # auto (serve.server.choose_engine) | builtin | llama.cpp | vllm
    max_num_seqs: int = 16
    enable_prefix_caching: bool = True  # builtin: shared prompt prefixes computed once per adapter
    merged_copies: int | None = None  # builtin: adapters with a merged copy of the base (None: what fits; 0: none)
    max_queue: int = 64
    max_model_len: int | None = None
    max_body_bytes: int = 1 << 20
    response_cache_size: int = 1024
    default_max_tokens: int = DEFAULT_MAX_NEW_TOKENS
    device: str | None = None
    db: str | None = None  # jobs and the request log; None = tuneforge.db.default_db_url()
    jobs_worker: bool = True  # train jobs in this process (else `tuneforge jobs worker` processes do)
    max_file_bytes: int = 512 << 20
    monitor: MonitorSettings = field(default_factory=MonitorSettings)  # its `db` defaults to `db`
    runs_dirs: list[str] = field(default_factory=list)  # more run folders /studio lists beside the jobs' runs


@dataclass
class Server:
    app: Any  # the FastAPI app
    engine: Any  # serve.engine_api.Engine
    api_keys: list[str]
    engine_choice: str = ""  # with --engine auto: "engine NAME (auto): why", printed at start

    def describe(self, host: str, port: int) -> str:
        """One line: what is served where."""
        names = ", ".join(m.name + (f" (adapter on {m.parent})" if m.parent else "") for m in self.engine.models())
        return (f"serving {names} on http://{host}:{port}/v1" + (" (API key required)" if self.api_keys else "")
                + f"; studio: http://{host}:{port}/studio")


def monitor_settings_for(opts: ServerOptions) -> MonitorSettings:
    """The monitoring settings with the server's defaults filled in: its database, and for scheduled drift
    checks of a served run, that run under its served name."""
    from tuneforge.run import is_run

    m = opts.monitor
    fill: dict = {}
    if m.db is None:
        fill["db"] = opts.db
    if m.drift_run is None and m.drift_interval_s and is_run(opts.target):
        fill["drift_run"] = opts.target
        if m.drift_model is None:
            fill["drift_model"] = opts.served_model_name
    return dataclasses.replace(m, **fill)


def build_server(opts: ServerOptions, *, routers: list | None = None) -> Server:
    """Load the models and build the app. Every setting is checked before the (slow) model load.
    `routers`: more FastAPI routers to mount (behind the same auth and error handling)."""
    from tuneforge.jobs.api import JobsAPI, served_bases
    from tuneforge.monitor.attach import attach_monitoring
    from tuneforge.monitor.dashboard import OPEN_PATHS as DASHBOARD_PATHS
    from tuneforge.serve.app import OPEN_PATHS, create_app
    from tuneforge.serve.completions import Settings
    from tuneforge.serve.server import api_keys_from, build_engine, choose_engine
    from tuneforge.studio import OPEN_PATHS as STUDIO_PATHS
    from tuneforge.studio import attach as attach_studio

    monitor = monitor_settings_for(opts)
    monitor.check()  # before the model loads: a bad flag fails in a second
    engine, choice = opts.engine, ""
    if engine == "auto":
        engine, why = choose_engine(opts.target, lora_modules=opts.lora_modules, device=opts.device)
        choice = f"engine {engine} (auto): {why}"
    build = functools.partial(build_engine, opts.target, lora_modules=opts.lora_modules,
                              served_model_name=opts.served_model_name, max_num_seqs=opts.max_num_seqs,
                              max_queue=opts.max_queue, max_model_len=opts.max_model_len, device=opts.device,
                              prefix_caching=opts.enable_prefix_caching, merged_copies=opts.merged_copies)
    try:
        eng = build(engine=engine)
    except TuneforgeError as e:
        if opts.engine != "auto" or engine == "builtin":
            raise
        # the automatic choice must not stop a run from being served: fall back, and say why
        eng = build(engine="builtin")
        choice = f"engine builtin (auto): llama.cpp could not serve the export ({e}); --engine to choose"
    keys = api_keys_from(opts.api_keys)
    jobs = JobsAPI(eng, opts.db, worker=opts.jobs_worker, max_file_bytes=opts.max_file_bytes,
                   bases=served_bases(opts.target, opts.served_model_name))
    app = create_app(eng, api_keys=keys, max_body_bytes=opts.max_body_bytes,
                     response_cache_size=opts.response_cache_size,
                     settings=Settings(default_max_tokens=opts.default_max_tokens),
                     routers=[jobs.router, *(routers or [])], body_limits=jobs.body_limits,
                     open_paths=OPEN_PATHS | DASHBOARD_PATHS | STUDIO_PATHS)
    attach_monitoring(app, monitor)
    attach_studio(app, jobs, runs_dirs=opts.runs_dirs)
    return Server(app, eng, keys, choice)


def run_server(server: Server, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until Ctrl-C / SIGTERM (uvicorn); the app's shutdown hooks drain the request log."""
    from tuneforge.serve.server import run

    run(server.app, host=host, port=port)
