"""LangChain clients: ChatOpenAI(base_url=...) against the server, and the guide's HuggingFacePipeline on a
merged run."""

from __future__ import annotations

from typing import Literal

from tests.serve.conftest import chat


def test_chat_openai_invoke_and_stream_match_the_sdk(server):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=server.url + "/v1", api_key="unused", model="beta", temperature=0,
                     max_tokens=8, max_retries=0)
    expected = chat(server, "beta", "what is LoRA?", max_tokens=8, temperature=0).choices[0].message.content
    msg = llm.invoke("what is LoRA?")
    assert msg.content == expected
    assert msg.usage_metadata["output_tokens"] == 8 or msg.response_metadata["finish_reason"] == "stop"
    assert "".join(c.content for c in llm.stream("what is LoRA?")) == expected


def test_chat_openai_batch_runs_concurrently_on_two_adapters(server):
    from langchain_openai import ChatOpenAI

    a = ChatOpenAI(base_url=server.url + "/v1", api_key="x", model="alpha", temperature=0, max_tokens=6)
    b = ChatOpenAI(base_url=server.url + "/v1", api_key="x", model="beta", temperature=0, max_tokens=6)
    ra, rb = a.batch(["hello", "hello"]), b.batch(["hello", "hello"])
    assert ra[0].content == ra[1].content and rb[0].content == rb[1].content
    assert ra[0].content != rb[0].content


def test_guides_huggingface_pipeline_loads_a_merged_run(tiny_lora_run):
    from langchain_huggingface import HuggingFacePipeline

    llm = HuggingFacePipeline.from_model_id(model_id=str(tiny_lora_run / "model"), task="text-generation",
                                            pipeline_kwargs={"max_new_tokens": 4})
    out = llm.invoke("add 1 and 2")
    assert isinstance(out, str) and out.startswith("add 1 and 2")  # the pipeline returns prompt + answer


def _structured_model():
    from pydantic import BaseModel, Field

    class Pet(BaseModel):
        """A pet."""

        kind: Literal["cat", "dog"]
        age: int = Field(ge=0, le=30)
        vaccinated: bool

    return Pet


def test_with_structured_output_returns_the_pydantic_object_by_schema_and_by_function_calling(server):
    from langchain_openai import ChatOpenAI

    Pet = _structured_model()
    llm = ChatOpenAI(base_url=server.url + "/v1", api_key="x", model="alpha", temperature=0, max_tokens=200,
                     max_retries=0)
    for method in ("json_schema", "function_calling"):  # response_format json_schema / a forced named tool
        pet = llm.with_structured_output(Pet, method=method).invoke("describe a pet")
        assert isinstance(pet, Pet) and pet.kind in ("cat", "dog") and 0 <= pet.age <= 30, method


def test_bind_tools_gets_tool_calls_and_a_tool_message_round_trip(server):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: Literal["Paris", "Rome"], celsius: bool) -> str:
        """The current weather in a city."""
        return f"sunny in {city}"

    llm = ChatOpenAI(base_url=server.url + "/v1", api_key="x", model="beta", temperature=0, max_tokens=120,
                     max_retries=0)
    msgs = [HumanMessage("weather in Rome?")]
    ai = llm.bind_tools([get_weather], tool_choice="required", parallel_tool_calls=False).invoke(msgs)
    assert len(ai.tool_calls) == 1 and ai.response_metadata["finish_reason"] == "tool_calls"
    call = ai.tool_calls[0]
    assert call["name"] == "get_weather" and call["args"]["city"] in ("Paris", "Rome")
    assert isinstance(call["args"]["celsius"], bool) and not ai.invalid_tool_calls
    msgs += [ai, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    answer = llm.bind_tools([get_weather]).invoke(msgs, max_tokens=6)  # auto: the model may answer in text
    assert answer.response_metadata["finish_reason"] in ("stop", "length", "tool_calls")
