"""Evaluation: metrics (pure functions), harness (batched generation + scoring), reports."""
