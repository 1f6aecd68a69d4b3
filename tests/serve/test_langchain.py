"""LangChain clients: ChatOpenAI(base_url=...) against the server, and the guide's HuggingFacePipeline on a
merged run."""

from __future__ import annotations

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
