"""Duplicate and leakage audit: byte-identical files (SHA-256) and near-duplicates (a 256-bit perceptual hash).

Near-duplicates are found with imagehash's DCT perceptual hash at hash_size 16 (256 bits)
on the decoded grayscale images. Two images are near-duplicates when their hashes differ in
at most NEAR_DUPLICATE_BITS bits. Measured on the 5,232 images of chest_xray_224: distinct
films are never closer than 38 bits, while re-encoded (JPEG quality 50), resized and
brightened copies stay within 14 bits (median 4). A 64-bit hash is too coarse for chest
films: at 2 bits it already pairs different children.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PHASH_SIZE = 16
NEAR_DUPLICATE_BITS = 16
# Rows of hashes compared against all others at once: bounds memory on large data sets.
_CHUNK = 1024
# Images hashed between two releases of a memory-mapped data set's pages.
HASH_BLOCK = 4096
# From this many images on, near duplicates are found by multi-index hashing instead of
# comparing every pair (20,000 images are 200 million pairs).
INDEXED_FROM = 20_000


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are copies of one another.

    Attributes:
        kind: "exact" (byte-identical files) or "near" (perceptual hashes within
            NEAR_DUPLICATE_BITS bits, and not all byte-identical).
        indices: Rows in the dataset.
        paths: Their paths, relative to the dataset root.
        patients: The distinct patient ids among them.
        splits: The distinct split folders among them.
        max_bits: The largest hash distance inside the group (0 for exact copies).
    """

    kind: str
    indices: tuple[int, ...]
    paths: tuple[str, ...]
    patients: tuple[str, ...]
    splits: tuple[str, ...]
    max_bits: int = 0

    @property
    def crosses_patients(self) -> bool:
        """Whether the copies carry different patient ids (a leak that patient grouping cannot see)."""
        return len(self.patients) > 1

    @property
    def crosses_splits(self) -> bool:
        """Whether the copies sit in different split folders (train and test, say)."""
        return len(self.splits) > 1

    def to_dict(self) -> dict:
        """Returns the JSON of the audit."""
        return {
            "kind": self.kind,
            "paths": list(self.paths),
            "patients": list(self.patients),
            "splits": list(self.splits),
            "max_bits": self.max_bits,
            "crosses_patients": self.crosses_patients,
            "crosses_splits": self.crosses_splits,
        }


@dataclass(frozen=True)
class DuplicateReport:
    """Every duplicate group of a dataset.

    Attributes:
        exact: Groups of byte-identical files.
        near: Groups of near-duplicates that are not all byte-identical.
        n_images: Images audited.
        near_bits: The distance used for near-duplicates.
    """

    exact: tuple[DuplicateGroup, ...] = ()
    near: tuple[DuplicateGroup, ...] = ()
    n_images: int = 0
    near_bits: int = NEAR_DUPLICATE_BITS
    digests: tuple[str, ...] = field(default=(), repr=False)

    @property
    def groups(self) -> tuple[DuplicateGroup, ...]:
        """Exact groups, then near ones."""
        return self.exact + self.near

    def summary(self) -> dict:
        """Counts for data.json and the UI."""
        return {
            "exact_groups": len(self.exact),
            "exact_images": sum(len(group.indices) for group in self.exact),
            "near_groups": len(self.near),
            "near_images": sum(len(group.indices) for group in self.near),
            "crossing_patients": sum(group.crosses_patients for group in self.groups),
            "crossing_splits": sum(group.crosses_splits for group in self.groups),
            "near_bits": self.near_bits,
        }


def file_digest(path: str | os.PathLike) -> str:
    """Returns the SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(root: str | os.PathLike, paths: Sequence[str]) -> list[str]:
    """Returns the SHA-256 of every file, by path relative to `root` (an unreadable file gets "")."""
    root = Path(root)
    digests = []
    for path in paths:
        try:
            digests.append(file_digest(root / path))
        except OSError:
            digests.append("")
    return digests


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """Returns the 256-bit DCT perceptual hash of each grayscale image, packed as (N, 32) uint8.

    The images are read in blocks, and a memory-mapped data set's pages are given back after
    each (release_pages), so that hashing a set larger than memory does not hold it.
    """
    import imagehash
    from PIL import Image

    from zoidberg.data.arraycache import release_pages

    packed = []
    for start in range(0, len(images), HASH_BLOCK):
        block = images[start : start + HASH_BLOCK]
        bits = np.array([imagehash.phash(Image.fromarray(image), hash_size=PHASH_SIZE).hash.ravel() for image in block], dtype=bool)
        packed.append(np.packbits(bits, axis=1))
        release_pages(images)
    return np.concatenate(packed) if packed else np.zeros((0, PHASH_SIZE * PHASH_SIZE // 8), np.uint8)


def near_pairs(hashes: np.ndarray, max_bits: int = NEAR_DUPLICATE_BITS) -> list[tuple[int, int, int]]:
    """Returns (i, j, bits) for every pair i < j of packed hashes at most max_bits apart.

    Up to INDEXED_FROM hashes every pair is compared; above, a multi-index search finds the
    same pairs without comparing all N² (see _indexed_near_pairs).
    """
    if len(hashes) >= INDEXED_FROM:
        return _indexed_near_pairs(hashes, max_bits)
    pairs = []
    for start in range(0, len(hashes), _CHUNK):
        block = hashes[start : start + _CHUNK]
        distances = np.bitwise_count(block[:, None, :] ^ hashes[None, :, :]).sum(axis=2)
        rows, columns = np.nonzero(distances <= max_bits)
        for row, column in zip(rows, columns):
            i = start + int(row)
            if i < column:
                pairs.append((i, int(column), int(distances[row, column])))
    return pairs


def _indexed_near_pairs(hashes: np.ndarray, max_bits: int) -> list[tuple[int, int, int]]:
    """near_pairs by multi-index hashing: exact, and about linear in N for images that are not all alike.

    Two hashes at most `max_bits` apart, cut into `max_bits + 1` bands, agree on at least one
    whole band (pigeonhole). So only hashes that share a band's value are compared, bucket
    by bucket and in blocks, so that memory stays bounded however large a bucket is.
    """
    bits = np.unpackbits(hashes, axis=1)
    found: dict[tuple[int, int], int] = {}
    for band in np.array_split(np.arange(bits.shape[1]), max_bits + 1):
        keys = np.packbits(bits[:, band], axis=1)
        codes = np.zeros(len(keys), dtype=np.int64)
        for column in range(keys.shape[1]):
            codes = (codes << 8) | keys[:, column].astype(np.int64)
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for begin, end in zip(starts, ends):
            if end - begin > 1:
                members = np.sort(order[begin:end])
                for i, j, distance in _close_pairs_within(hashes, members, max_bits):
                    found[(i, j)] = distance
    return [(i, j, distance) for (i, j), distance in sorted(found.items())]


def _close_pairs_within(hashes: np.ndarray, members: np.ndarray, max_bits: int):
    """Yields (i, j, bits) for the pairs i < j of `members` (sorted) at most max_bits apart, a block of rows at a time."""
    block = max(1, (64 * 1024 * 1024) // (len(members) * hashes.shape[1]))
    member_hashes = hashes[members]
    for start in range(0, len(members), block):
        rows = member_hashes[start : start + block]
        distances = np.bitwise_count(rows[:, None, :] ^ member_hashes[None, :, :]).sum(axis=2)
        for row, column in zip(*np.nonzero(distances <= max_bits)):
            if start + row < column:
                yield int(members[start + row]), int(members[column]), int(distances[row, column])


def _components(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components of more than one element (union-find)."""
    parent = list(range(n))

    def find(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for a, b in pairs:
        parent[find(a)] = find(b)
    members: dict[int, list[int]] = {}
    for item in range(n):
        members.setdefault(find(item), []).append(item)
    return sorted((sorted(group) for group in members.values() if len(group) > 1), key=lambda group: group[0])


def find_duplicates(dataset, *, near_bits: int = NEAR_DUPLICATE_BITS, digests: Sequence[str] | None = None) -> DuplicateReport:
    """Audits a loaded dataset for exact and near-duplicate images.

    Args:
        dataset: A loaded Dataset (its decoded images are hashed; its files are read for SHA-256).
        near_bits: Most bits in which two perceptual hashes may differ.
        digests: The files' SHA-256 when already known.

    Returns:
        The report.
    """
    n = len(dataset.paths)
    digests = list(digests) if digests is not None else file_digests(dataset.root, dataset.paths)
    by_digest: dict[str, list[int]] = {}
    for index, digest in enumerate(digests):
        if digest:
            by_digest.setdefault(digest, []).append(index)
    exact_pairs = [(group[0], other) for group in by_digest.values() for other in group[1:]]
    near = near_pairs(perceptual_hashes(dataset.images), near_bits)
    distances = {(i, j): bits for i, j, bits in near}

    def group_of(kind: str, indices: list[int]) -> DuplicateGroup:
        inside = [distances.get((a, b), 0) for position, a in enumerate(indices) for b in indices[position + 1 :]]
        return DuplicateGroup(
            kind=kind,
            indices=tuple(indices),
            paths=tuple(dataset.paths[index] for index in indices),
            patients=tuple(sorted({str(dataset.patients[index]) for index in indices})),
            splits=tuple(sorted({str(dataset.splits[index]) for index in indices})),
            max_bits=max(inside, default=0) if kind == "near" else 0,
        )

    exact = [group_of("exact", group) for group in _components(n, exact_pairs)]
    exact_sets = {frozenset(group.indices) for group in exact}
    merged = _components(n, exact_pairs + [(i, j) for i, j, _ in near])
    near_groups = [group_of("near", group) for group in merged if frozenset(group) not in exact_sets]
    return DuplicateReport(tuple(exact), tuple(near_groups), n, near_bits, tuple(digests))


def groups_crossing_folds(report: DuplicateReport, indices: np.ndarray, fold_of: np.ndarray) -> list[tuple[DuplicateGroup, tuple[int, ...]]]:
    """Returns the duplicate groups whose copies fall in different folds, with those folds (1-based).

    Args:
        report: The audit of the dataset.
        indices: The dataset rows that were folded (training_indices()).
        fold_of: The fold (0-based) of each of those rows.
    """
    position = {int(row): fold for row, fold in zip(indices, fold_of)}
    crossing = []
    for group in report.groups:
        folds = tuple(sorted({int(position[index]) + 1 for index in group.indices if index in position}))
        if len(folds) > 1:
            crossing.append((group, folds))
    return crossing


def apply_duplicate_policy(report: DuplicateReport, patients: np.ndarray, indices: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Makes folds honest about duplicates.

    Args:
        report: The audit of the dataset.
        patients: Patient ids of every dataset row.
        indices: The rows to fold (training_indices()).
        policy: "group" (the patients of every group become one, so that all their images
            share a fold), "drop" (one image of each group is kept) or "ignore".

    Returns:
        (rows to fold, the grouping id of each dataset row, the paths dropped).
    """
    patients = np.asarray(patients).astype(str)
    indices = np.asarray(indices)
    if policy == "ignore" or not report.groups:
        return indices, patients, []
    if policy == "group":
        names = sorted(set(patients))
        number = {name: position for position, name in enumerate(names)}
        links = [(number[group.patients[0]], number[other]) for group in report.groups for other in group.patients[1:]]
        merged = {name: name for name in names}
        for component in _components(len(names), links):
            # Every patient of a chain of duplicates gets the same id, e.g. "person1+person7".
            joined = "+".join(names[member] for member in component)
            for member in component:
                merged[names[member]] = joined
        return indices, np.array([merged[name] for name in patients], dtype=object), []
    dropped = {index for group in report.groups for index in group.indices[1:]}
    kept = np.array([row for row in indices if int(row) not in dropped], dtype=indices.dtype)
    paths = sorted(path for group in report.groups for index, path in zip(group.indices, group.paths) if index in dropped)
    return kept, patients, paths


AUDIT_FORMAT_VERSION = 1


def load_or_find_duplicates(dataset, *, cache_dir: str | os.PathLike | None = None, near_bits: int = NEAR_DUPLICATE_BITS) -> DuplicateReport:
    """The duplicate report of a dataset, from the disk cache when its files are unchanged.

    The audit hashes every file and decodes every image's perceptual hash (about a second
    per 5,000 images here), so it is kept beside the decoded-image cache, keyed by the
    file-list fingerprint, the image size and the distance.
    """
    import json

    from zoidberg.data.dataset import default_cache_dir

    preprocessing = "" if (dataset.resize, dataset.enhance) == ("stretch", "none") else f"-{dataset.resize}-{dataset.enhance}"
    key = f"duplicates-{dataset.fingerprint}-{dataset.image_size}px{preprocessing}-{near_bits}bits-v{AUDIT_FORMAT_VERSION}.json"
    path = Path(cache_dir or default_cache_dir()) / key
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("paths") == list(dataset.paths):
            return _report_from_indices(dataset, stored["exact"], stored["near"], stored["near_max_bits"], stored["digests"], near_bits)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    report = find_duplicates(dataset, near_bits=near_bits)
    payload = {
        "paths": list(dataset.paths),
        "digests": list(report.digests),
        "exact": [list(group.indices) for group in report.exact],
        "near": [list(group.indices) for group in report.near],
        "near_max_bits": [group.max_bits for group in report.near],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        pass  # A cache that cannot be written only costs time next run.
    return report


def _report_from_indices(dataset, exact, near, near_max_bits, digests, near_bits) -> DuplicateReport:
    """Rebuilds a report from cached row numbers."""

    def group(kind, indices, bits=0):
        return DuplicateGroup(
            kind=kind,
            indices=tuple(indices),
            paths=tuple(dataset.paths[index] for index in indices),
            patients=tuple(sorted({str(dataset.patients[index]) for index in indices})),
            splits=tuple(sorted({str(dataset.splits[index]) for index in indices})),
            max_bits=bits,
        )

    return DuplicateReport(
        tuple(group("exact", indices) for indices in exact),
        tuple(group("near", indices, bits) for indices, bits in zip(near, near_max_bits)),
        len(dataset.paths),
        near_bits,
        tuple(digests),
    )
