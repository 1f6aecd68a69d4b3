"""Serving: an OpenAI-compatible HTTP server (`tuneforge serve`) over a continuous-batching engine.

protocol (wire format, errors) · engine (batching, adapters; no HTTP) · loading (what TARGET serves) ·
text (detokenization, stop) · cache (response cache) · metrics (Prometheus) · completions (the generation
routes' flow) · app (create_app: routes, auth, limits) · server (uvicorn) · vllm_engine (GPU path).
"""
