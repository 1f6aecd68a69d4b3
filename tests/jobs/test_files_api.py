"""/v1/files on a real server: the SDK's upload, list, retrieve, content and delete; stored names never come from
the client; the size limit holds while the upload streams; an interrupted upload leaves nothing."""

from __future__ import annotations

import io
import socket
import time

import httpx
import openai
import pytest
from openai.types import FileDeleted, FileObject

from tests.jobs.conftest import chat_rows, client, jobs_server, jsonl_bytes, upload

LIMIT = 4096


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    with jobs_server(tiny_dir, root, worker=False, max_file_bytes=LIMIT) as (srv, api):
        yield srv, api, root


def _stored(root) -> list[str]:
    return sorted(p.name for p in (root / "files").iterdir())


def test_upload_list_retrieve_content_delete(server):
    srv, api, root = server
    c = client(srv)
    data = jsonl_bytes(chat_rows(12))
    f = c.files.create(file=("train.jsonl", io.BytesIO(data)), purpose="fine-tune")
    FileObject.model_validate(f.model_dump())
    assert f.id.startswith("file-") and f.bytes == len(data) and f.filename == "train.jsonl"
    assert f.purpose == "fine-tune" and f.status == "processed"
    assert f"{f.id}.jsonl" in _stored(root)
    assert c.files.retrieve(f.id) == f
    assert f.id in [x.id for x in c.files.list()]
    assert c.files.content(f.id).content == data
    gone = c.files.delete(f.id)
    FileDeleted.model_validate(gone.model_dump())
    assert gone.deleted and gone.id == f.id
    assert f"{f.id}.jsonl" not in _stored(root)
    for call in (c.files.retrieve, c.files.content, c.files.delete):
        with pytest.raises(openai.NotFoundError) as e:
            call(f.id)
        assert e.value.body["code"] == "file_not_found"


@pytest.mark.parametrize("name,shown", [("../../../escape.jsonl", "escape.jsonl"),
                                        ("..\\..\\evil.jsonl", "evil.jsonl"),
                                        ("/etc/cron.d/x.jsonl", "x.jsonl")])
def test_the_clients_filename_never_becomes_a_path(server, name, shown):
    srv, api, root = server
    before = sorted(p.name for p in root.parent.rglob("*"))
    f = upload(client(srv), chat_rows(10), name=name)
    assert f.filename == shown
    assert (root / "files" / f"{f.id}.jsonl").read_bytes() == jsonl_bytes(chat_rows(10))
    after = sorted(p.name for p in root.parent.rglob("*"))
    assert set(after) - set(before) == {f"{f.id}.jsonl"}  # nothing else appeared anywhere


def test_control_characters_are_dropped_from_the_shown_name(server):
    srv, _, root = server
    body = (b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n--B\r\n'
            b'Content-Disposition: form-data; name="file"; filename="../a\x01b\x7f.jsonl"\r\n\r\n'
            + jsonl_bytes(chat_rows(10)) + b"\r\n--B--\r\n")
    r = httpx.post(srv.url + "/v1/files", content=body, headers={"content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 200 and r.json()["filename"] == "ab.jsonl"
    assert (root / "files" / f"{r.json()['id']}.jsonl").is_file()


@pytest.mark.parametrize("path", ["/v1/files/..%2F..%2Ftuneforge.db/content", "/v1/files/../tuneforge.db/content",
                                  "/v1/files/file-x%2F..%2F..%2Ftuneforge.db/content"])
def test_ids_that_look_like_paths_are_unknown_files(server, path):
    srv, _, _ = server
    r = httpx.get(srv.url + path)
    assert r.status_code == 404 and "error" in r.json()


def test_oversize_uploads_are_refused_and_leave_nothing(server):
    srv, api, root = server
    c = client(srv)
    head, tail = b'{"prompt": "p", "completion": "', b'"}\n'
    exact = head + b"x" * (LIMIT - len(head) - len(tail)) + tail
    assert c.files.create(file=("ok.jsonl", io.BytesIO(exact)), purpose="fine-tune").bytes == LIMIT
    stored, rows = _stored(root), api.store.file_ids()

    with pytest.raises(openai.APIStatusError) as e:  # Content-Length says so: refused before reading
        c.files.create(file=("big.jsonl", io.BytesIO(exact + b"\n")), purpose="fine-tune")
    assert e.value.status_code == 413

    def chunks():  # chunked, no Content-Length: the limit holds while the bytes stream in
        yield (b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
               b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n')
        for _ in range(40):
            yield b"y" * 1024
        yield b"\r\n--B--\r\n"

    r = httpx.post(srv.url + "/v1/files", content=chunks(), headers={"content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    assert _stored(root) == stored and api.store.file_ids() == rows


def test_an_upload_cut_off_midway_leaves_nothing(server):
    srv, api, root = server
    stored, rows = _stored(root), api.store.file_ids()
    body = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n' + b"z" * 2000)
    with socket.create_connection((srv.host, srv.port)) as s:
        s.sendall(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                  b"Content-Length: 3500\r\n\r\n" + body)
        deadline = time.monotonic() + 10
        while not any(n.endswith(".part") for n in _stored(root)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any(n.endswith(".part") for n in _stored(root))  # it was streaming to disk
    deadline = time.monotonic() + 10
    while _stored(root) != stored and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _stored(root) == stored and api.store.file_ids() == rows


@pytest.mark.parametrize("name,purpose,code", [("train.csv", "fine-tune", "invalid_file_format"),
                                               ("train.jsonl", "assistants", "invalid_value"),
                                               ("train.jsonl", None, "missing_required_parameter")])
def test_bad_uploads_are_400_naming_the_field(server, name, purpose, code):
    srv, _, root = server
    stored = _stored(root)
    data = {"purpose": purpose} if purpose else {}
    r = httpx.post(srv.url + "/v1/files", files={"file": (name, b'{"text": "x"}\n')}, data=data)
    assert r.status_code == 400 and r.json()["error"]["code"] == code
    assert _stored(root) == stored


def test_files_page_with_after_and_order(server):
    srv, _, _ = server
    c = client(srv)
    ids = [upload(c, chat_rows(10)).id for _ in range(3)]
    page = c.files.list(limit=2, order="asc", after=ids[0])
    assert [f.id for f in page.data] == ids[1:] and not page.has_more
    newest = c.files.list(limit=2)
    assert [f.id for f in newest.data] == ids[::-1][:2] and newest.has_more
    assert set(ids) <= {f.id for f in c.files.list(limit=1)}  # the SDK pages on through every file
    with pytest.raises(openai.NotFoundError):
        c.files.list(after="file-unknown")


def test_a_file_an_unfinished_job_trains_on_cannot_be_deleted(server, tiny_dir):
    srv, _, _ = server
    c = client(srv)
    f = upload(c, chat_rows(10))
    job = c.fine_tuning.jobs.create(model=str(tiny_dir), training_file=f.id)
    with pytest.raises(openai.BadRequestError) as e:
        c.files.delete(f.id)
    assert e.value.body["code"] == "file_in_use" and job.id in e.value.body["message"]
    c.fine_tuning.jobs.cancel(job.id)
    assert c.files.delete(f.id).deleted
