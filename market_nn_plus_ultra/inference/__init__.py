"""Inference layer: a trained run's checkpoint → the predictions frame.

agent = Agent.from_checkpoint("outputs/run", device="auto")
frame = agent.predict("data/market.db", start="2024-01-01")   # timestamp, symbol, position, …
run = predict_files("outputs/run", "out.parquet", "data/market.db", cfg.evaluation)  # + files
"""

from .agent import Agent, resolve_device
from .benchmark import DEFAULT_BENCHMARK, benchmark_returns
from .policy_agent import PolicyAgent
from .predict_io import PredictionRun, predict_files, write_metrics

__all__ = [
    "DEFAULT_BENCHMARK",
    "Agent",
    "PolicyAgent",
    "PredictionRun",
    "benchmark_returns",
    "predict_files",
    "resolve_device",
    "write_metrics",
]
