"""Rebuild `openai-subset.json`: the components of OpenAI's published OpenAPI document that the conformance
test uses (request bodies of the generation routes, 200 bodies of every implemented route), with their
`$ref` closure. Tests cannot download, so the subset is committed; rerun this to update it:

    python tests/serve/openapi/vendor.py PATH/TO/openai-openapi/openapi.json COMMIT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOTS = [
    "CreateChatCompletionRequest", "CreateCompletionRequest",
    "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse", "CreateCompletionResponse",
    "ListModelsResponse", "Model", "OpenAIFile", "ListFilesResponse", "DeleteFileResponse",
    "FineTuningJob", "ListPaginatedFineTuningJobsResponse", "ListFineTuningJobEventsResponse",
    "ListFineTuningJobCheckpointsResponse", "ErrorResponse",
]
DROP = ("x-oaiMeta", "x-oaiExpandable", "example", "examples")


def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in DROP}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def closure(schemas: dict, roots: list[str]) -> dict:
    seen: dict = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = strip(schemas[name])

        def walk(x):
            if isinstance(x, dict):
                for k, v in x.items():
                    if k == "$ref" and isinstance(v, str):
                        todo.append(v.rsplit("/", 1)[-1])
                    else:
                        walk(v)
            elif isinstance(x, list):
                for v in x:
                    walk(v)
        walk(schemas[name])
    return dict(sorted(seen.items()))


def main(src: str, commit: str) -> None:
    doc = json.loads(Path(src).read_text())
    out = {"x-source": {"repository": "https://github.com/openai/openai-openapi", "file": "openapi.json",
                        "commit": commit, "info.version": doc["info"]["version"],
                        "note": "components reachable from ROOTS in vendor.py; descriptions kept, examples dropped"},
           "components": {"schemas": closure(doc["components"]["schemas"], ROOTS)}}
    Path(__file__).with_name("openai-subset.json").write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
