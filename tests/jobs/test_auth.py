"""Every files and jobs route needs the server's API key (the routes are read off the router, so a new route is
covered without editing this test)."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from tests.jobs.conftest import chat_rows, client, jobs_server, upload

KEY = "sk-test-key"
EXPECTED = {("POST", "/v1/files"), ("GET", "/v1/files"), ("GET", "/v1/files/{file_id}"),
            ("GET", "/v1/files/{file_id}/content"), ("DELETE", "/v1/files/{file_id}"),
            ("POST", "/v1/fine_tuning/jobs"), ("GET", "/v1/fine_tuning/jobs"), ("GET", "/v1/fine_tuning/jobs/{job_id}"),
            ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"), ("POST", "/v1/fine_tuning/jobs/{job_id}/pause"),
            ("POST", "/v1/fine_tuning/jobs/{job_id}/resume"), ("GET", "/v1/fine_tuning/jobs/{job_id}/events"),
            ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints"),
            ("POST", "/v1/fine_tuning/alpha/graders/run"), ("POST", "/v1/fine_tuning/alpha/graders/validate")}


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    with jobs_server(tiny_dir, tmp_path_factory.mktemp("auth"), worker=False, api_keys=[KEY]) as (srv, api):
        yield srv, api


def _routes(api) -> list[tuple[str, str]]:
    return sorted((m, r.path) for r in api.router.routes for m in r.methods)


def test_the_router_has_every_files_and_jobs_route(server):
    assert set(_routes(server[1])) == EXPECTED


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}],
                         ids=["none", "wrong", "not-bearer"])
def test_every_route_refuses_a_request_without_the_key(server, headers):
    srv, api = server
    c = client(srv, KEY)
    f = upload(c, chat_rows(10))
    job = c.fine_tuning.jobs.create(model=api.engine.models()[0].name, training_file=f.id)
    for method, path in _routes(api):
        url = srv.url + re.sub(r"\{file_id\}", f.id, re.sub(r"\{job_id\}", job.id, path))
        r = httpx.request(method, url, headers=headers, json={} if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"
    assert c.files.retrieve(f.id).id == f.id  # nothing was deleted or changed by the refused calls
    assert c.fine_tuning.jobs.retrieve(job.id).status in ("validating_files", "queued")
    c.fine_tuning.jobs.cancel(job.id)


def test_with_the_key_the_sdk_gets_through(server):
    srv, _ = server
    with pytest.raises(openai.AuthenticationError):
        client(srv, "wrong").files.list()
    assert client(srv, KEY).fine_tuning.jobs.list().object == "list"
