"""tuneforge studio: the whole path (data → train → runs → evaluate → playground → export) on one web page,
a client of the server's public HTTP API only.

- `api` — the `/v1/tuneforge/...` routes the page needs beyond OpenAI's API (data check, advise, cost, train
  defaults/schema/validation, runs, eval, export, download, tasks), behind the server's API key;
- `tasks` — bounded background tasks (eval, export) polled by id;
- `page` — `/studio` and its two assets (plain HTML/CSS/JS in `static/`, no build step).

`attach(app, jobs)` adds both to an app made by `serve.app.create_app` with a `jobs.api.JobsAPI`; the app must
be created with `open_paths` including `studio.OPEN_PATHS` for the page (not its data) to load without a key.
`tuneforge serve` does this; `tuneforge studio` starts it and opens the page.
"""

from __future__ import annotations

from tuneforge.studio.page import OPEN_PATHS


def attach(app, jobs, *, runs_dirs=()):
    """Add the studio's API routes and page to `app`; returns the StudioAPI."""
    from tuneforge.studio.api import StudioAPI
    from tuneforge.studio.page import page_router

    studio = StudioAPI(jobs, runs_dirs=runs_dirs)
    app.include_router(studio.router)
    app.include_router(page_router())
    app.state.studio = studio
    app.state.shutdown_hooks.append(studio.tasks.shutdown)
    return studio


__all__ = ["OPEN_PATHS", "attach"]
