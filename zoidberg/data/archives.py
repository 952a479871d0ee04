"""Images out of an uploaded .zip, read in memory: entries that leave the archive and zip bombs refused."""

from __future__ import annotations

import io
import posixpath
import zipfile
from dataclasses import dataclass

from zoidberg.data.imaging import MAX_UPLOAD_BYTES

# The most an archive may hold once uncompressed, and how many entries. A zip bomb is
# refused by what its central directory declares before anything is inflated, and an entry
# whose header understates its size is cut off while it streams, so that memory stays
# bounded by these caps whatever the headers say (512 MB is 50 full-resolution PNGs of 10 MB).
MAX_ARCHIVE_BYTES = 512 * 1024**2
MAX_ARCHIVE_ENTRIES = 20_000
# How much of an entry is inflated at a time.
CHUNK_BYTES = 1024**2


@dataclass(frozen=True)
class ArchiveEntry:
    """One file of an archive: its path inside it, its bytes, or why it was not read."""

    name: str
    data: bytes = b""
    reason: str | None = None


def safe_entry_name(name: str) -> str | None:
    """The entry's normalised relative path, or None when it is absolute or climbs out with `..` (zip slip)."""
    normalised = posixpath.normpath(name.replace("\\", "/"))
    if normalised.startswith("/") or normalised == ".." or normalised.startswith("../") or ":" in normalised.split("/")[0]:
        return None
    return normalised


def declared_bytes(data: bytes) -> int:
    """What a zip archive's entries declare, uncompressed, in total (its central directory only; nothing is inflated).

    Raises:
        ValueError: Not a zip archive.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return sum(info.file_size for info in archive.infolist() if not info.is_dir())
    except zipfile.BadZipFile:
        raise ValueError("This file is not a readable .zip archive.") from None


def read_zip(data: bytes, *, max_total_bytes: int = MAX_ARCHIVE_BYTES, max_entries: int = MAX_ARCHIVE_ENTRIES) -> list[ArchiveEntry]:
    """Reads every file entry of a zip archive into memory, in archive order.

    Folders and hidden files (`__MACOSX/`, `.DS_Store`) are left out. An entry whose path
    leaves the archive is refused by itself; one larger than an upload may be is refused by
    itself too. Nothing is written to disk.

    Args:
        data: The archive's bytes.
        max_total_bytes: The most the entries may declare, uncompressed, in total.
        max_entries: The most entries.

    Returns:
        The entries, each with its bytes or its reason.

    Raises:
        ValueError: Not a zip archive, or one that declares more than the limits (a zip bomb).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ValueError("This file is not a readable .zip archive.") from None
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        if len(infos) > max_entries:
            raise ValueError(f"The archive holds {len(infos):,} files; at most {max_entries:,} are read at once.")
        declared = sum(info.file_size for info in infos)
        if declared > max_total_bytes:
            raise ValueError(
                f"The archive would unpack to {declared / 1024**2:,.0f} MB (at most {max_total_bytes / 1024**2:,.0f} MB): refused as a possible zip bomb."
            )
        entries = []
        for info in infos:
            name = safe_entry_name(info.filename)
            base = posixpath.basename(info.filename)
            if name is not None and (base.startswith(".") or name.startswith("__MACOSX/")):
                continue
            if name is None:
                entries.append(ArchiveEntry(info.filename, reason="refused: its path leaves the archive (absolute or ../)"))
            elif info.file_size > MAX_UPLOAD_BYTES:
                entries.append(ArchiveEntry(name, reason=f"refused: {info.file_size / 1024**2:.0f} MB, above the {MAX_UPLOAD_BYTES // 1024**2} MB limit per file"))
            else:
                entries.append(_read_entry(archive, info, name))
        return entries


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> ArchiveEntry:
    """One entry inflated a chunk at a time and never past the size its header declares.

    zipfile stops an entry at its declared size and then checks its CRC, so one that would
    unpack to more is cut there and fails: refused as a possible zip bomb, with no more memory
    spent than it declared.
    """
    chunks, size = [], 0
    try:
        with archive.open(info) as stream:
            while size < info.file_size and (chunk := stream.read(min(CHUNK_BYTES, info.file_size - size))):
                size += len(chunk)
                chunks.append(chunk)
    except zipfile.BadZipFile:
        return ArchiveEntry(name, reason="refused: it does not unpack to what its header declares (damaged, or a possible zip bomb)")
    except (RuntimeError, OSError, NotImplementedError, EOFError) as error:
        return ArchiveEntry(name, reason=f"unreadable in the archive: {error}")
    return ArchiveEntry(name, b"".join(chunks))
