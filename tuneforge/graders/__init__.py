"""Graders in OpenAI's JSON shapes — string_check, text_similarity, python, score_model, multi — scoring a model's
answer (`sample`) against a dataset row (`item`) in [0, 1] (score_model: its `range`).

The reward of GRPO (`train`), the RL score of `tuneforge eval`, `tuneforge grader run` and the server's
`/v1/fine_tuning/alpha/graders/{run,validate}` all go through `build(spec).grade(samples, items)`. Layer 3 (beside
`train`, which imports it; it imports only layers 0-1): pure scoring, no model code — a score_model judge is a chat
function given by the caller or the openai SDK.
"""

from tuneforge.graders.core import (ERROR_FLAGS, Grader, GraderError, Result, build, item_from_row, load,
                                    run_response, sample_from_text, summarize, validate)

__all__ = ["ERROR_FLAGS", "Grader", "GraderError", "Result", "build", "item_from_row", "load", "run_response",
           "sample_from_text", "summarize", "validate"]
