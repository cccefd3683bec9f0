"""Arrays onto a mesh of other devices (llm.rl.reshard): the plan that builds each process's
target shards from its own source shards, and both ways of building them (from local shards,
through the host), checked on the 8 CPU devices of one process against ``jax.device_put``."""

from typing import NamedTuple

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from llm.models.sharding import make_mesh
from llm.rl.reshard import local_plan, reshard_by_shards, reshard_through_host


class FakeDevice(NamedTuple):
    name: str
    process_index: int


A0, A1, B0, B1 = FakeDevice("a0", 0), FakeDevice("a1", 0), FakeDevice("b0", 1), FakeDevice("b1", 1)
TOP, BOTTOM, ALL = (slice(0, 2), slice(None)), (slice(2, 4), slice(None)), (slice(None),) * 2
TOP_BOUNDED, BOTTOM_BOUNDED = (slice(0, 2), slice(0, 3)), (slice(2, 4), slice(0, 3))


def test_each_target_block_comes_from_shards_of_its_own_process():
    """Learner rows over (a0, b0), sampler rows over (a1, b1): each process copies its half;
    a block over both processes' shards, or held by the other process only, has no plan."""
    source = {A0: TOP, B0: BOTTOM}
    whole = (slice(0, 2), slice(0, 3))
    assert local_plan(source, {A1: TOP, B1: BOTTOM}, (4, 3)) == {
        A1: [(A0, whole, whole)],
        B1: [(B0, whole, whole)],
    }
    quarter = (slice(2, 3), slice(0, 3))
    assert local_plan(source, {B1: quarter}, (4, 3)) == {
        B1: [(B0, (slice(0, 1), slice(0, 3)), (slice(0, 1), slice(0, 3)))]
    }
    assert local_plan(source, {A1: BOTTOM, B1: TOP}, (4, 3)) is None  # the other process has it
    assert local_plan(source, {A1: ALL, B1: ALL}, (4, 3)) is None
    replicated = local_plan({A0: ALL, B0: ALL}, {A1: TOP, B1: BOTTOM}, (4, 3))
    assert replicated == {A1: [(A0, TOP_BOUNDED, whole)], B1: [(B0, BOTTOM_BOUNDED, whole)]}


def test_a_block_is_made_of_several_shards_of_its_process():
    """Quarters over (a0, a1, b0, b1) (a replica of each on a second device too), halves
    over two target devices: each half from its process's two quarters, a replica once."""
    quarters = {A0: (slice(0, 1),), A1: (slice(1, 2),), B0: (slice(2, 3),), B1: (slice(3, 4),)}
    replicas = {FakeDevice(d.name + "'", d.process_index): i for d, i in quarters.items()}
    a2, b2 = FakeDevice("a2", 0), FakeDevice("b2", 1)
    plan = local_plan(quarters | replicas, {a2: (slice(0, 2),), b2: (slice(2, 4),)}, (4,))
    one = (slice(0, 1),)
    assert plan == {
        a2: [(A0, one, one), (A1, one, (slice(1, 2),))],
        b2: [(B0, one, one), (B1, one, (slice(1, 2),))],
    }
    assert local_plan(quarters, {a2: (slice(1, 3),)}, (4,)) is None  # half of it on b0


@pytest.mark.parametrize(
    ("source_spec", "target_spec"),
    [
        (P("fsdp", "tp"), P("fsdp")),
        (P("fsdp", "tp"), P(None, "fsdp")),
        (P("fsdp"), P()),
        (P(None, "tp"), P("fsdp", None)),
    ],
)
def test_both_ways_give_the_array_on_the_target(source_spec, target_spec):
    """Blocks cut from several shards and written into one, or through the host: each
    target shard holds its block of the array (one process: every plan exists)."""
    learner = make_mesh("fsdp=3,tp=2", jax.devices()[:6])
    sampler = make_mesh("fsdp=2", jax.devices()[6:])
    host = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    x = jax.device_put(host, NamedSharding(learner, source_spec))
    target = NamedSharding(sampler, target_spec)
    maps = (x.sharding.devices_indices_map(x.shape), target.devices_indices_map(x.shape))
    plan = local_plan(*maps, x.shape)
    for y in (reshard_by_shards(x, target, plan), reshard_through_host(x, target)):
        assert y.sharding == target and y.dtype == x.dtype
        for shard in y.addressable_shards:
            np.testing.assert_array_equal(np.asarray(shard.data), host[shard.index])
