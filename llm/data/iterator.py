"""A deterministic, resumable stream of example batches.

`BatchIterator`: epoch e visits the N examples in the order ``permutation_{seed, e}(N)``
(`np.random.default_rng([seed, e])`), so batch k of the stream is the same whatever the
interruptions; its state `(seed, epoch, position)` round-trips through
`IteratorState.to_dict/from_dict` so that a checkpoint can hold it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from llm.data.examples import Example


@dataclasses.dataclass(frozen=True)
class IteratorState:
    """Where a `BatchIterator` stands: epoch, position (examples consumed in that epoch), seed.

    `num_examples` guards a resume against a different dataset.
    """

    seed: int = 0
    epoch: int = 0
    position: int = 0
    num_examples: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IteratorState:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown IteratorState fields: {sorted(unknown)}")
        return cls(**{k: (None if v is None else int(v)) for k, v in d.items()})


class BatchIterator:
    """Endless, deterministic batches of examples, reshuffled every epoch from the seed.

    Epoch e uses the permutation drawn by `np.random.default_rng([seed, e])`; with
    `shuffle=False` the file order. `drop_last=True` (the default, fixed batch shapes) skips
    the last N mod batch_size examples of an epoch; otherwise the last batch is short.
    `state` / `IteratorState` resume the stream exactly where it stopped.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        state: IteratorState | Mapping[str, Any] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(examples) == 0:
            raise ValueError("examples must not be empty")
        if drop_last and batch_size > len(examples):
            raise ValueError(
                f"batch_size {batch_size} > number of examples {len(examples)} with drop_last"
            )
        self.examples = examples
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._seed, self._epoch, self._position = int(seed), 0, 0
        self._order: np.ndarray | None = None
        if state is not None:
            self.restore(state)

    @property
    def state(self) -> IteratorState:
        return IteratorState(self._seed, self._epoch, self._position, len(self.examples))

    def restore(self, state: IteratorState | Mapping[str, Any]) -> None:
        if not isinstance(state, IteratorState):
            state = IteratorState.from_dict(state)
        if state.num_examples is not None and state.num_examples != len(self.examples):
            raise ValueError(
                f"iterator state was saved for {state.num_examples} examples, "
                f"the dataset has {len(self.examples)}"
            )
        if not 0 <= state.position <= len(self.examples) or state.epoch < 0:
            raise ValueError(f"invalid iterator state {state}")
        self._seed, self._epoch, self._position = state.seed, state.epoch, state.position
        self._order = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Indices of the examples in the order epoch `epoch` visits them."""
        n = len(self.examples)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self._seed, epoch]).permutation(n)

    def __iter__(self) -> Iterator[list[Example]]:
        return self

    def __next__(self) -> list[Example]:
        n = len(self.examples)
        remaining = n - self._position
        if remaining == 0 or (self.drop_last and remaining < self.batch_size):
            self._epoch, self._position, self._order = self._epoch + 1, 0, None
        if self._order is None:
            self._order = self.epoch_order(self._epoch)
        idx = self._order[self._position : self._position + self.batch_size]
        self._position += len(idx)
        return [self.examples[int(i)] for i in idx]
