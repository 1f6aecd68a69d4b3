"""Uploaded files on disk: stored under generated ids, streamed in with the size limit enforced as bytes arrive.

`POST /v1/files` is OpenAI's multipart upload: a `file` part and a `purpose` field. `receive_upload` parses the
request stream itself (python-multipart) and writes the file part straight into `files/.upload-<id>.part`
beside the database; past the limit it stops reading, removes the part file and answers 413. A complete upload
is fsynced and renamed to `files/<id>.jsonl` before its database row is committed, so an upload the server
answered is on disk, and a killed one leaves at most a `.part` file that `sweep` removes on the next start.
The client's filename is kept only for display (its last path component, control characters removed): it
never becomes part of a path.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tuneforge.run import FILE_MODE, fsync_dir
from tuneforge.serve import protocol as P

FILE_ID = re.compile(r"^file-[A-Za-z0-9]{1,64}$")
FINE_TUNE_EXT = ".jsonl"
PURPOSES = ("fine-tune",)  # what clients may upload; results files (fine-tune-results) are written by jobs
MAX_FIELD_BYTES = 4096  # a form field (purpose) is a short string
MULTIPART_OVERHEAD = 64 << 10  # boundaries and part headers around the file: the body limit is the file's + this
STALE_PART_S = 600  # a .part file not written for this long belongs to an upload that died


def display_name(raw: str) -> str:
    """The last component of a client's filename, without control characters (`../../x.jsonl` → `x.jsonl`)."""
    name = PurePosixPath(raw.replace("\\", "/")).name
    name = "".join(c for c in name if c.isprintable()).strip()
    return name[:255] if name not in ("", ".", "..") else "upload"


class FileStore:
    """The `files/` directory: `<id>.jsonl` per stored file."""

    def __init__(self, root: Path):
        self.dir = Path(root) / "files"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        if not FILE_ID.match(file_id):
            raise KeyError(file_id)
        return self.dir / f"{file_id}{FINE_TUNE_EXT}"

    def part_path(self, file_id: str) -> Path:
        return self.dir / f".upload-{file_id}.part"

    def commit(self, part: Path, file_id: str) -> Path:
        """fsync + rename: the stored file appears whole or not at all."""
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(part, FILE_MODE)
        final = self.path(file_id)
        os.replace(part, final)
        fsync_dir(self.dir)
        return final

    def write(self, file_id: str, data: bytes) -> Path:
        """A file the server itself makes (a job's results CSV), written the same atomic way."""
        part = self.part_path(file_id)
        part.write_bytes(data)
        return self.commit(part, file_id)

    def remove(self, file_id: str) -> None:
        self.path(file_id).unlink(missing_ok=True)

    def sweep(self, known: set[str]) -> list[Path]:
        """Remove what dead uploads left: stale `.part` files, and stored files whose row was never committed."""
        removed, now = [], time.time()
        for p in self.dir.iterdir():
            stale = now - p.stat().st_mtime > STALE_PART_S
            orphan = p.suffix == FINE_TUNE_EXT and FILE_ID.match(p.stem) and p.stem not in known
            if stale and (p.name.endswith(".part") or orphan):
                p.unlink(missing_ok=True)
                removed.append(p)
        return removed


@dataclass
class Upload:
    """A received upload, still in its part file (the caller commits or removes it)."""

    file_id: str
    part: Path
    filename: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    size: int = 0
    sha256: str = ""


class _Receiver:
    """python-multipart callbacks: the `file` part to disk (counting bytes), other fields into memory."""

    def __init__(self, store: FileStore, upload: Upload, max_bytes: int):
        self.store, self.up, self.max_bytes = store, upload, max_bytes
        self.hash = hashlib.sha256()
        self.out = None
        self.header_name, self.header_value = b"", b""
        self.disposition = b""
        self.field: str | None = None
        self.value = bytearray()
        self.is_file = False

    def on_part_begin(self) -> None:
        self.disposition, self.field, self.value, self.is_file = b"", None, bytearray(), False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, opts = parse_options_header(self.disposition)
        self.field = opts.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in opts:
            return
        if self.field != "file" or self.out is not None:
            raise P.bad_request("upload exactly one file, in the form field 'file'", param="file")
        self.is_file = True
        self.up.filename = display_name(opts[b"filename"].decode("utf-8", "replace"))
        if not self.up.filename.lower().endswith(FINE_TUNE_EXT):
            raise P.bad_request(f"file: fine-tuning files must be JSON Lines with a {FINE_TUNE_EXT} name "
                                f"(got '{self.up.filename}')", param="file", code="invalid_file_format")
        self.out = open(self.up.part, "wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if not self.is_file:
            self.value += chunk
            if len(self.value) > MAX_FIELD_BYTES:
                raise P.bad_request(f"form field '{self.field}' is too long", param=self.field)
            return
        self.up.size += len(chunk)
        if self.up.size > self.max_bytes:
            raise P.OpenAIError(413, f"file: larger than this server's upload limit of {self.max_bytes} bytes",
                                param="file", code="file_too_large")
        self.out.write(chunk)
        self.hash.update(chunk)

    def on_part_end(self) -> None:
        if not self.is_file and self.field:
            self.up.fields[self.field] = self.value.decode("utf-8", "replace")

    def callbacks(self) -> dict:
        return {name: getattr(self, name) for name in (
            "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
            "on_part_data", "on_part_end")}


async def receive_upload(request, store: FileStore, file_id: str, max_bytes: int) -> Upload:
    """Stream a multipart upload into `store`'s part file for `file_id`. On any failure (bad form, over the
    limit, client gone) the part file is removed and the error propagates."""
    from python_multipart import MultipartParser
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import parse_options_header

    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise P.bad_request("expected a multipart/form-data upload with fields 'file' and 'purpose'",
                            param="file")
    up = Upload(file_id, store.part_path(file_id))
    rx = _Receiver(store, up, max_bytes)
    try:
        parser = MultipartParser(params[b"boundary"], rx.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        if rx.out is None:
            raise P.bad_request("file: missing required parameter (a multipart part named 'file')",
                                param="file", code="missing_required_parameter")
        rx.out.close()
    except BaseException as e:
        if rx.out is not None:
            rx.out.close()
        up.part.unlink(missing_ok=True)
        if isinstance(e, FormParserError):
            raise P.bad_request(f"malformed multipart body: {e}", param="file") from None
        raise
    up.sha256 = rx.hash.hexdigest()
    return up
