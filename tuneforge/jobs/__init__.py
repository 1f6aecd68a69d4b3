"""OpenAI-compatible files and fine-tuning jobs, trained on this machine with tuneforge's recipe.

`store` (database tables and state transitions), `files` (uploads on disk), `recipe` (job fields → TrainConfig,
file checks, model names), `worker` (claims and trains jobs: `tuneforge jobs worker`), `api` (the routes that
`tuneforge serve` adds).
"""
