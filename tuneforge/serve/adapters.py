"""vLLM's runtime adapter routes: `POST /v1/load_lora_adapter` and `POST /v1/unload_lora_adapter`.

Bodies as vLLM takes them (`{"lora_name", "lora_path"}`, `{"lora_name"}`) and its plain-text success answers,
so scripts written for `vllm serve --enable-lora` work unchanged. `lora_path` is a finished run directory or a
peft LoRA adapter directory on the server's disk. Behind the same auth as every route (the app's middleware);
errors are OpenAI error bodies. Loading blocks only between decode steps (the engine's model lock).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from tuneforge.serve import protocol as P


def adapters_router(engine) -> APIRouter:
    router = APIRouter()

    def name_of(body: dict) -> str:
        name = body.get("lora_name")
        if not isinstance(name, str) or not name:
            raise P.bad_request("lora_name: a non-empty string is required", param="lora_name")
        return name

    @router.post("/v1/load_lora_adapter")
    async def load(request: Request):
        from tuneforge.errors import TuneforgeError

        body = P.parse_json_body(await request.body())
        name, path = name_of(body), body.get("lora_path")
        if not isinstance(path, str) or not path:
            raise P.bad_request("lora_path: a non-empty string is required", param="lora_path")
        if engine.get(name) is not None:
            raise P.bad_request(f"The lora adapter '{name}' has already been loaded", param="lora_name",
                                code="adapter_exists")
        try:
            await asyncio.get_running_loop().run_in_executor(None, engine.add_adapter, name, path)
        except TuneforgeError as e:
            raise P.bad_request(str(e), param="lora_path") from None
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @router.post("/v1/unload_lora_adapter")
    async def unload(request: Request):
        from tuneforge.errors import TuneforgeError

        name = name_of(P.parse_json_body(await request.body()))
        try:
            await asyncio.get_running_loop().run_in_executor(None, engine.remove_adapter, name)
        except KeyError:
            raise P.not_found(f"The lora adapter '{name}' cannot be found", param="lora_name",
                              code="adapter_not_found") from None
        except NotImplementedError as e:
            raise P.bad_request(str(e), param="lora_name") from None
        except TuneforgeError as e:
            raise P.bad_request(str(e), param="lora_name") from None
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    return router
