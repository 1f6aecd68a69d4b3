"""GET /studio: the page, its script and its stylesheet (package data in studio/static/, no build step).

The three paths are open like /dashboard (the page shell holds no data); everything the page shows comes from
the API with the key the user types once, kept in sessionStorage (the dashboard reads the same entry).
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).with_name("static")
ASSETS = {"/studio": ("index.html", "text/html; charset=utf-8"),
          "/studio/studio.js": ("studio.js", "text/javascript; charset=utf-8"),
          "/studio/studio.css": ("studio.css", "text/css; charset=utf-8")}
OPEN_PATHS = frozenset(ASSETS)


def page_router():
    from fastapi import APIRouter
    from fastapi.responses import Response

    router = APIRouter()

    def serve(name: str, media: str):
        async def asset():
            return Response((STATIC / name).read_bytes(), media_type=media, headers={"Cache-Control": "no-store"})
        return asset

    for path, (name, media) in ASSETS.items():
        router.add_api_route(path, serve(name, media), methods=["GET"], include_in_schema=False)
    return router
