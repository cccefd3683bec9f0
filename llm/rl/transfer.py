"""Host <-> device transfers of the trainer, single- and multi-process alike.

Every process holds the same host arrays (the same rollout, the same `Batch`). `to_global`
gives each process's devices their rows through ``jax.make_array_from_process_local_data``
(each process feeds its slice of the global array), `batch_to_global` does it for a whole
`Batch` (one ``device_put`` on one process), and `to_host` gathers a global array back into
a numpy array on every process; `tree_to_host` does it for a whole tree in one blocking fetch
(the arrays a process holds whole, ``jax.device_get`` of all of them at once).
"""

from __future__ import annotations

import jax
import numpy as np

from llm.models.sharding import to_host as to_host  # re-exported: the transfer helpers in one place
from llm.rl.batch import Batch


def tree_to_host(tree):
    """``tree`` with every jax array as numpy: the ones this process holds whole (fully
    addressable, or replicated: its own copy) in one ``jax.device_get``, the others gathered
    by `to_host`."""
    leaves, treedef = jax.tree.flatten(tree)
    local = [
        (x if x.is_fully_addressable else x.addressable_data(0))
        if isinstance(x, jax.Array) and (x.is_fully_addressable or x.is_fully_replicated)
        else None
        for x in leaves
    ]
    fetched = jax.device_get([x for x in local if x is not None])
    fetched.reverse()
    host = [np.asarray(fetched.pop()) if x is not None else to_host(leaf)
            for x, leaf in zip(local, leaves, strict=True)]  # fmt: skip
    return jax.tree.unflatten(treedef, host)


def to_global(x: np.ndarray, sharding) -> jax.Array:
    """A global array from the host array every process holds, each feeding its own rows."""
    x = np.asarray(x)
    if sharding is None:
        return jax.device_put(x)
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    index_map = sharding.addressable_devices_indices_map(x.shape)
    if x.ndim < 2:
        return jax.make_array_from_process_local_data(sharding, x, x.shape)
    starts = [idx[1].start or 0 for idx in index_map.values()]
    stops = [x.shape[1] if idx[1].stop is None else idx[1].stop for idx in index_map.values()]
    local = x[:, min(starts) : max(stops)]
    return jax.make_array_from_process_local_data(sharding, local, x.shape)


def batch_to_global(batch: Batch, shardings) -> Batch:
    """The host batch on the devices (``shardings``: a Batch of shardings, or None): one
    transfer for the whole batch on one process."""
    if jax.process_count() == 1:
        return jax.device_put(batch, shardings)
    shardings = shardings if shardings is not None else Batch(*([None] * len(Batch._fields)))
    return Batch(*(to_global(x, s) for x, s in zip(batch, shardings, strict=True)))
