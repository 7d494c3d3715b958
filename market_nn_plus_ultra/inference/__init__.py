"""Inference layer: a trained run's checkpoint → the predictions frame.

agent = Agent.from_checkpoint("outputs/run", device="auto")
frame = agent.predict("data/market.db", start="2024-01-01")   # timestamp, symbol, position, …
"""

from .agent import Agent, resolve_device
from .benchmark import DEFAULT_BENCHMARK, benchmark_returns

__all__ = ["DEFAULT_BENCHMARK", "Agent", "benchmark_returns", "resolve_device"]
