"""Images out of an uploaded .zip, read in memory: entries that leave the archive and zip bombs refused."""

from __future__ import annotations

import io
import posixpath
import zipfile
from dataclasses import dataclass

from zoidberg.data.imaging import MAX_UPLOAD_BYTES

# The most an archive may hold once uncompressed, and how many entries: a zip bomb is
# refused by what its central directory declares, before anything is inflated.
MAX_ARCHIVE_BYTES = 2 * 1024**3
MAX_ARCHIVE_ENTRIES = 20_000


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
                try:
                    entries.append(ArchiveEntry(name, archive.read(info)))
                except (zipfile.BadZipFile, RuntimeError, OSError, NotImplementedError) as error:
                    entries.append(ArchiveEntry(name, reason=f"unreadable in the archive: {error}"))
        return entries
