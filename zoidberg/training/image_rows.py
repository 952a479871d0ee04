"""The images training reads, chosen once: one tensor sharing the array's memory, or rows read per batch from a large (memory-mapped) array."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoidberg.data.arraycache import TENSOR_ALIGNMENT, aligned_take, stream_bytes


def _shareable(array: np.ndarray) -> bool:
    """Whether a tensor can share the array's buffer (C-contiguous, writable, aligned to 64 bytes)."""
    return array.size > 0 and array.flags.c_contiguous and array.flags.writeable and array.ctypes.data % TENSOR_ALIGNMENT == 0


def _shared_tensor(array: np.ndarray) -> tf.Tensor:
    """The array as a tensor, sharing its buffer through DLPack when it can, else copied.

    tf.constant copies a NumPy array (and briefly holds two copies): 500 MB for the 5,232
    training images at 224 px. A C-contiguous, writable array aligned to 64 bytes (as
    load_dataset returns, decoded or memory-mapped from its cache) is handed over at no
    cost instead. The images must then not be modified while the tensor lives; nothing in
    Zoidberg modifies a loaded dataset.
    """
    if _shareable(array):
        try:
            return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
        except (BufferError, TypeError, ValueError):
            pass
    return tf.constant(array)


class ImageRows:
    """uint8 (N, S, S) images as every fold, trial and prediction of a run reads them, held once.

    The one choice between the two ways is made here, by the array's size against
    $ZOIDBERG_STREAM_BYTES (1 GiB by default):
    - in memory: one tensor for all folds (sharing the array's buffer, see _shared_tensor); a
      subset of rows reads the shared tensor through its row numbers, so a fold child holds no
      copy of the rows it trains on (an array that cannot be shared is gathered once instead);
    - streamed: a data set this large is usually read through its cache file's mapping. tf.data
      would copy a captured tensor whole and gathering the rows would copy the data set, so each
      batch reads its rows from the array, and the pages read are given back (callbacks()).

    Args:
        images: The images: an array (usually a loaded dataset's), or a tensor already.
        indices: The rows to keep, in the order positions refer to them; None keeps all.
    """

    def __init__(self, images: np.ndarray | tf.Tensor, indices: np.ndarray | None = None):
        self._tensor: tf.Tensor | None = None
        self._array: np.ndarray | None = None
        self._rows: np.ndarray | None = None
        self._row_numbers: tf.Tensor | None = None  # The subset's rows in a shared tensor of all rows.
        if isinstance(images, tf.Tensor):
            self._tensor = images if indices is None else tf.gather(images, np.asarray(indices))
            self.shape = tuple(self._tensor.shape)
            return
        array = images if isinstance(images, np.ndarray) else np.asarray(images)
        every_row = indices is None or np.array_equal(np.asarray(indices), np.arange(len(array)))
        if array.nbytes >= stream_bytes():
            self._array = array
            self._rows = None if every_row else np.asarray(indices)
            self.shape = (len(array) if every_row else len(self._rows), *array.shape[1:])
        elif every_row or not _shareable(array):
            self._tensor = _shared_tensor(array if every_row else aligned_take(array, np.asarray(indices)))
            self.shape = tuple(self._tensor.shape)
        else:
            self._tensor = _shared_tensor(array)
            self._row_numbers = tf.constant(np.asarray(indices, dtype=np.int64))
            self.shape = (len(indices), *array.shape[1:])

    @classmethod
    def of(cls, images) -> ImageRows:
        """`images` when they already are ImageRows, else ImageRows of all their rows."""
        return images if isinstance(images, ImageRows) else cls(images)

    @property
    def streamed(self) -> bool:
        """Whether batches read their rows from the array instead of one tensor."""
        return self._tensor is None

    @property
    def tensor(self) -> tf.Tensor:
        """The images as one tensor (in memory only).

        Raises:
            ValueError: For streamed images, which are never one tensor.
        """
        if self._tensor is None:
            raise ValueError("Streamed images are read per batch; they have no single tensor.")
        return self._tensor if self._row_numbers is None else tf.gather(self._tensor, self._row_numbers)

    def __len__(self) -> int:
        return int(self.shape[0])

    def numpy(self) -> np.ndarray:
        """All the rows as one NumPy array (shared with the tensor in memory; read, and so copied, when streamed)."""
        if self._tensor is not None:
            return self.tensor.numpy()
        return self._array if self._rows is None else self._array[self._rows]

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The images at these positions, as a NumPy array."""
        if self._tensor is not None:
            return self.gather(tf.constant(np.asarray(positions))).numpy()
        return self._array[positions if self._rows is None else self._rows[positions]]

    def gather(self, positions: tf.Tensor) -> tf.Tensor:
        """The uint8 rows at `positions`, inside a tf.data pipeline."""
        if self._tensor is not None:
            return tf.gather(self._tensor, positions if self._row_numbers is None else tf.gather(self._row_numbers, positions))
        rows = tf.numpy_function(self.take, [positions], tf.uint8, stateful=False)
        return tf.reshape(rows, [-1, *self.shape[1:]])

    def callbacks(self) -> list:
        """The Keras callbacks reading these images needs: streamed pages are given back as training goes."""
        if not self.streamed:
            return []
        from zoidberg.training.callbacks import PageRelease

        return [PageRelease(self._array)]
