"""Data sets larger than memory: batches read from a large array one at a time, the same as from a tensor."""

import numpy as np
import pytest


def test_a_large_array_is_read_batch_by_batch_with_the_same_batches(monkeypatch):
    import tensorflow as tf

    from zoidberg.training.image_rows import ImageRows
    from zoidberg.training.pipeline import make_batches

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16), dtype=np.uint8)
    labels = rng.integers(0, 2, 40)
    positions = np.arange(0, 30)
    rows = np.arange(10, 40)
    expected = [(x.numpy(), y.numpy()) for x, y in make_batches(images[rows], labels[rows], positions, 8)]
    # From here on every array counts as larger than memory.
    monkeypatch.setenv("ZOIDBERG_STREAM_BYTES", "1")
    assert ImageRows(images).streamed and len(ImageRows(images).callbacks()) == 1
    view = ImageRows(images, rows)
    assert view.streamed and len(view) == 30 and view.shape == (30, 16, 16)
    np.testing.assert_array_equal(view.numpy(), images[rows])
    with pytest.raises(ValueError, match="per batch"):
        view.tensor
    monkeypatch.delenv("ZOIDBERG_STREAM_BYTES")
    in_memory = ImageRows(images, rows)
    assert not in_memory.streamed and in_memory.callbacks() == [] and in_memory.tensor.shape == (30, 16, 16)
    np.testing.assert_array_equal(in_memory.take(np.array([0, 5])), images[rows[[0, 5]]])
    np.testing.assert_array_equal(in_memory.numpy(), images[rows])
    monkeypatch.setenv("ZOIDBERG_STREAM_BYTES", "1")
    for source in (view, images[rows], in_memory):
        got = [(x.numpy(), y.numpy()) for x, y in make_batches(source, labels[rows], positions, 8)]
        assert len(got) == len(expected)
        for (x, y), (want_x, want_y) in zip(got, expected):
            np.testing.assert_array_equal(x, want_x)
            np.testing.assert_array_equal(y, want_y)
            assert x.dtype == tf.float32.as_numpy_dtype and x.shape[1:] == (16, 16, 1)
