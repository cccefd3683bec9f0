"""The ragged rollout engine's sampler: cost that follows the live tokens (see
`llm.ragged.sampler`)."""

from llm.ragged.sampler import generate_ragged

__all__ = ["generate_ragged"]
