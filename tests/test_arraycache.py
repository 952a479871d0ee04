"""Array cache files: round trip, chunked checksums, and every kind of damage refused."""

import numpy as np
import pytest

from zoidberg.data import arraycache


@pytest.fixture
def small_chunks(monkeypatch):
    """Makes chunks tiny so that small test arrays span several of them."""
    monkeypatch.setattr(arraycache, "CHUNK_BYTES", 1000)


def accept_all(header: dict) -> bool:
    return True


def test_round_trip_keeps_array_and_header(tmp_path, small_chunks):
    array = np.random.randint(0, 256, size=(7, 30, 30), dtype=np.uint8)
    path = tmp_path / "cache.bin"
    assert arraycache.write_array_file(path, {"key": "abc"}, array)
    header, loaded = arraycache.read_array_file(path, np.uint8, accept_all)
    np.testing.assert_array_equal(loaded, array)
    assert header["key"] == "abc" and header["shape"] == [7, 30, 30]
    assert len(header["checksums"]) == 7  # 6,300 bytes in 1,000-byte chunks.
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("offset_from_end", [1, 3500, 6299])
def test_a_flipped_byte_in_any_chunk_is_refused(tmp_path, small_chunks, offset_from_end):
    array = np.random.randint(0, 256, size=(7, 30, 30), dtype=np.uint8)
    path = tmp_path / "cache.bin"
    arraycache.write_array_file(path, {}, array)
    content = bytearray(path.read_bytes())
    content[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(content))
    assert arraycache.read_array_file(path, np.uint8, accept_all) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda content: content[: len(content) - 10],  # Truncated.
        lambda content: content + b"x",  # Trailing bytes.
        lambda content: b"",  # Empty.
        lambda content: b"\xff" * 8 + content[8:],  # Absurd header length.
        lambda content: content[:8] + b"{not json" + content[17:],  # Broken header.
    ],
)
def test_damaged_files_are_refused(tmp_path, damage):
    path = tmp_path / "cache.bin"
    arraycache.write_array_file(path, {}, np.arange(100, dtype=np.float32))
    path.write_bytes(damage(path.read_bytes()))
    assert arraycache.read_array_file(path, np.float32, accept_all) is None


def test_stale_header_and_wrong_dtype_are_refused(tmp_path):
    path = tmp_path / "cache.bin"
    arraycache.write_array_file(path, {"key": 1}, np.zeros((4, 4), dtype=np.uint8))
    assert arraycache.read_array_file(path, np.uint8, lambda header: header["key"] == 2) is None
    assert arraycache.read_array_file(path, np.float32, accept_all) is None
    assert arraycache.read_array_file(tmp_path / "absent.bin", np.uint8, accept_all) is None


def test_unwritable_folder_returns_false_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    assert not arraycache.write_array_file(blocker / "cache.bin", {}, np.zeros(3, dtype=np.uint8))


def test_data_starts_on_a_page_and_images_reach_tensorflow_without_a_copy(tmp_path):
    import tensorflow as tf

    from zoidberg.training.image_rows import ImageRows

    array = np.random.randint(0, 256, size=(5, 16, 16), dtype=np.uint8)
    path = tmp_path / "cache.bin"
    arraycache.write_array_file(path, {"key": "x" * 123}, array)
    _, mapped = arraycache.read_array_file(path, np.uint8, accept_all)
    assert mapped.ctypes.data % arraycache.DATA_ALIGNMENT == 0
    for source in (mapped, arraycache.aligned_take(array, np.array([4, 0, 2]))):
        tensor = ImageRows(source).tensor
        np.testing.assert_array_equal(tensor.numpy(), source)
        # Shared, not copied: TensorFlow sees a change made through NumPy.
        source[0, 0, 0] ^= 0xFF
        assert int(tf.gather(tensor, [0])[0, 0, 0]) == int(source[0, 0, 0])
    unaligned = np.frombuffer(bytes(5 * 16 * 16 + 1), dtype=np.uint8, offset=1).reshape(5, 16, 16)
    np.testing.assert_array_equal(ImageRows(unaligned).tensor.numpy(), unaligned)  # Copied, never shared.
    assert path.read_bytes()[-1] == array[-1, -1, -1], "writes go to private pages, never to the file"


def test_a_file_streamed_in_blocks_is_the_file_written_at_once(tmp_path, small_chunks, monkeypatch):
    array = np.random.randint(0, 256, size=(11, 30, 30), dtype=np.uint8)
    whole, streamed = tmp_path / "whole.bin", tmp_path / "streamed.bin"
    assert arraycache.write_array_file(whole, {"key": "abc"}, array)
    writer = arraycache.StreamedArrayFile(streamed, array.shape, np.uint8)
    # Blocks that do not line up with the 1,000-byte chunks.
    for start in (0, 3, 4, 9):
        stop = {0: 3, 3: 4, 4: 9, 9: 11}[start]
        writer.write_rows(array[start:stop])
    assert writer.finish({"key": "abc"})
    assert streamed.read_bytes() == whole.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))
    # Validated from the file (pread) instead of the mapping once the array counts as large.
    monkeypatch.setenv(arraycache.STREAM_BYTES_ENV, "1")
    header, loaded = arraycache.read_array_file(streamed, np.uint8, accept_all)
    np.testing.assert_array_equal(loaded, array)
    damaged = bytearray(streamed.read_bytes())
    damaged[-5] ^= 1
    streamed.write_bytes(bytes(damaged))
    assert arraycache.read_array_file(streamed, np.uint8, accept_all) is None


def test_a_short_stream_is_not_written(tmp_path):
    writer = arraycache.StreamedArrayFile(tmp_path / "short.bin", (4, 8, 8), np.uint8)
    writer.write_rows(np.zeros((3, 8, 8), np.uint8))
    assert not writer.finish({})
    assert list(tmp_path.iterdir()) == []


def test_pages_of_a_mapped_array_are_given_back_and_an_array_in_memory_is_left_alone(tmp_path):
    array = np.random.randint(0, 256, size=(64, 64, 64), dtype=np.uint8)
    path = tmp_path / "cache.bin"
    arraycache.write_array_file(path, {}, array)
    _, mapped = arraycache.read_array_file(path, np.uint8, accept_all)
    assert arraycache.release_pages(mapped)
    # Read again after the release: the pages come back from the file unchanged.
    np.testing.assert_array_equal(mapped, array)
    assert not arraycache.release_pages(array)


def test_a_subset_of_rows_reads_the_shared_images_without_a_copy(tmp_path):
    import tensorflow as tf

    from zoidberg.training.image_rows import ImageRows

    array = np.random.randint(0, 256, size=(6, 16, 16), dtype=np.uint8)
    path = tmp_path / "cache.bin"
    arraycache.write_array_file(path, {}, array)
    _, mapped = arraycache.read_array_file(path, np.uint8, accept_all)
    indices = np.array([5, 1, 3])
    rows = ImageRows(mapped, indices)
    assert len(rows) == 3 and rows.shape == (3, 16, 16) and not rows.streamed
    np.testing.assert_array_equal(rows.numpy(), array[indices])
    np.testing.assert_array_equal(rows.take(np.array([2, 0])), array[[3, 5]])
    np.testing.assert_array_equal(rows.gather(tf.constant([1])).numpy(), array[[1]])
    # Shared with the mapping, not gathered into a copy: a change made through NumPy shows.
    mapped[1, 0, 0] ^= 0xFF
    assert int(rows.gather(tf.constant([1]))[0, 0, 0]) == int(mapped[1, 0, 0])


def test_the_worker_gives_back_its_images_while_fold_children_train(demo_dir, tmp_path, monkeypatch):
    from zoidberg.config import DataConfig, RunConfig
    from zoidberg.data.dataset import load_dataset
    from zoidberg.training.cv import images_given_back

    monkeypatch.setenv("ZOIDBERG_CACHE_DIR", str(tmp_path / "cache"))
    config = RunConfig(data=DataConfig(data_dir=str(demo_dir), image_size=32))
    decoded = load_dataset(demo_dir, **config.data.loader_options())  # Cold: decoded in memory, cache written.
    assert not arraycache.release_pages(decoded.images)
    lean = images_given_back(decoded, config)
    assert lean.images is not decoded.images and arraycache.release_pages(lean.images)
    np.testing.assert_array_equal(lean.images, decoded.images)
    assert list(lean.paths) == list(decoded.paths) and lean.fingerprint == decoded.fingerprint
