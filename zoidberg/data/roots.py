"""The folders a shared dashboard may read: $ZOIDBERG_DATA_ROOTS, checked after links and `..` are resolved."""

from __future__ import annotations

import os
from pathlib import Path

ROOTS_ENV = "ZOIDBERG_DATA_ROOTS"


def allowed_roots() -> list[Path] | None:
    """The configured roots (os.pathsep-separated), resolved, with the embedded demo data; None when unset."""
    from zoidberg.data.demo import default_demo_dir

    text = os.environ.get(ROOTS_ENV, "").strip()
    if not text:
        return None
    roots = [Path(part).expanduser().resolve() for part in text.split(os.pathsep) if part.strip()]
    # The synthetic demo set is the app's own: it stays readable wherever the roots point.
    return roots + [default_demo_dir().expanduser().resolve()]


def is_allowed(path: str | os.PathLike) -> bool:
    """Whether a path, once links and `..` are resolved, lies under an allowed root (always, without roots)."""
    roots = allowed_roots()
    if roots is None:
        return True
    resolved = real_path(path)
    return any(resolved == root or root in resolved.parents for root in roots)


def real_path(path: str | os.PathLike) -> Path:
    """The path with links and `..` resolved; a link loop stays where it loops (it leads to nothing to read)."""
    # os.path.realpath, unlike Path.resolve on Python 3.11, does not raise RuntimeError on a loop.
    return Path(os.path.realpath(Path(path).expanduser()))


def check_allowed(path: str | os.PathLike) -> Path:
    """Returns the resolved path, or refuses one outside the allowed roots.

    Raises:
        ValueError: The path (or the link it is) leads outside $ZOIDBERG_DATA_ROOTS.
    """
    if not is_allowed(path):
        roots = ", ".join(str(root) for root in allowed_roots() or [])
        raise ValueError(
            f"{path} is outside the folders this server may read ({roots}). Choose a folder under one of them; "
            f"the server's administrator sets them in ${ROOTS_ENV}."
        )
    return real_path(path)


def check_folder_allowed(path: str | os.PathLike) -> Path:
    """Returns the resolved folder, or refuses it when it, or a link anywhere inside it, leads outside the roots.

    A `NORMAL -> /elsewhere/NORMAL` link inside an allowed folder would otherwise let the
    dashboard read files outside $ZOIDBERG_DATA_ROOTS, so every link's real path is checked.

    Raises:
        ValueError: The folder or a link inside it leads outside $ZOIDBERG_DATA_ROOTS.
    """
    folder = check_allowed(path)
    roots = allowed_roots()
    if roots is None or not folder.is_dir():
        return folder
    outside, seen = [], set()
    for current, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            # A link back up the tree: walked once.
            folders[:] = []
            continue
        seen.add(real)
        for name in [*folders, *files]:
            entry = os.path.join(current, name)
            if os.path.islink(entry) and not is_allowed(entry):
                outside.append(entry)
        folders[:] = [name for name in folders if os.path.join(current, name) not in outside]
    if outside:
        raise ValueError(
            f"{outside[0]} is a link to {os.path.realpath(outside[0])}, outside the folders this server may read"
            f"{f' ({len(outside)} such links in all)' if len(outside) > 1 else ''}. Copy those files into the folder, "
            f"or ask the server's administrator to add their folder to ${ROOTS_ENV}."
        )
    return folder
