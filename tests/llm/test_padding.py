"""`llm.padding`: the bucket functions' properties over every size up to a few thousand (what
the compile cache relies on: few shapes, each fitting, bounded waste), and left padding."""

import numpy as np
import pytest

from llm.padding import MIN_LENGTH_BUCKET, bucket_size, length_bucket, pad_prompts

SIZES = np.arange(1, 4097)


@pytest.mark.parametrize("minimum", [1, 4, 16])
def test_bucket_size_is_the_smallest_power_of_two_that_fits(minimum):
    buckets = np.array([bucket_size(int(n), minimum) for n in SIZES])
    need = np.maximum(SIZES, minimum)
    assert (buckets >= need).all()
    assert (np.diff(buckets) >= 0).all()  # monotone: a bigger batch never gets a smaller shape
    assert (buckets & (buckets - 1) == 0).all()  # powers of two
    assert (buckets < 2 * need).all()  # the smallest: half of it would not fit
    # every size up to 4096 in log2(4096 / minimum) + 1 shapes
    assert len(set(buckets.tolist())) == int(np.log2(4096 // minimum)) + 1


@pytest.mark.parametrize("minimum", [1, MIN_LENGTH_BUCKET, 48])
def test_length_bucket_fits_with_bounded_padding_and_few_shapes(minimum):
    buckets = np.array([length_bucket(int(n), minimum) for n in SIZES])
    need = np.maximum(SIZES, minimum)
    assert (buckets >= need).all() and (buckets % 16 == 0).all()
    assert (np.diff(buckets) >= 0).all()
    # padding: under 16 tokens, and at most a quarter of the length past 64 tokens
    assert (buckets - need < np.maximum(16, need / 4)).all()
    assert (buckets[need > 64] <= 1.25 * need[need > 64]).all()
    # at most 4 shapes per doubling of the length
    for e in range(1, 12):
        octave = (need > 2 ** (e - 1)) & (need <= 2**e)
        assert len(set(buckets[octave].tolist())) <= 4, e
    # a bucket is its own bucket: padded batches land on the shapes already compiled
    for b in set(buckets.tolist()):
        assert length_bucket(b, minimum) == b


def test_pad_prompts_left_pads_and_marks_filler_rows():
    tokens, mask = pad_prompts([[5, 6, 7], [8]], batch_size=3, length=4, pad_token_id=0)
    np.testing.assert_array_equal(tokens, [[0, 5, 6, 7], [0, 0, 0, 8], [0, 0, 0, 0]])
    # the filler row (past the prompts) sees one pad token, so its attention is defined
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1]])
    assert tokens.dtype == mask.dtype == np.int32
