"""Data sets larger than memory: batches read from a large array one at a time, the same as from a tensor."""

import numpy as np


def test_a_large_array_is_read_batch_by_batch_with_the_same_batches(monkeypatch):
    import tensorflow as tf

    from zoidberg.training.pipeline import RowsOf, as_image_tensor, make_batches, rows_as_tensor

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16), dtype=np.uint8)
    labels = rng.integers(0, 2, 40)
    positions = np.arange(0, 30)
    rows = np.arange(10, 40)
    expected = [(x.numpy(), y.numpy()) for x, y in make_batches(images[rows], labels[rows], positions, 8)]
    # From here on every array counts as larger than memory.
    monkeypatch.setenv("ZOIDBERG_STREAM_BYTES", "1")
    assert isinstance(as_image_tensor(images), np.ndarray)
    view = rows_as_tensor(images, rows)
    assert isinstance(view, RowsOf) and len(view) == 30
    assert isinstance(rows_as_tensor(images, np.arange(40)), np.ndarray)
    for source in (view, images[rows]):
        got = [(x.numpy(), y.numpy()) for x, y in make_batches(source, labels[rows], positions, 8)]
        assert len(got) == len(expected)
        for (x, y), (want_x, want_y) in zip(got, expected):
            np.testing.assert_array_equal(x, want_x)
            np.testing.assert_array_equal(y, want_y)
            assert x.dtype == tf.float32.as_numpy_dtype and x.shape[1:] == (16, 16, 1)
