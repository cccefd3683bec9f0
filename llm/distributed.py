"""Multi-process JAX: ``initialize_distributed`` before anything touches a device.

Every process then sees the global device list; the trainer builds one mesh over all of
them and each process feeds its own devices their rows of the (identical) host batch.
"""

from __future__ import annotations

import os

import jax

__all__ = ["initialize_distributed"]


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """``jax.distributed.initialize`` from explicit values or the usual environment variables
    (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; or a cluster jax detects).
    Call before anything touches a device."""
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
