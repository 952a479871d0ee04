"""Offline ImageNet weights: which Keras no-top file an architecture needs and where it is on disk."""

from __future__ import annotations

import os
from pathlib import Path

from zoidberg.options.registry import BACKBONES, MOBILENET_V2_ALPHAS, MOBILENET_V2_ROWS

WEIGHTS_DIR_ENV = "ZOIDBERG_WEIGHTS_DIR"


class WeightsNotFoundError(FileNotFoundError):
    """Raised when pretrained weights are requested but no local file holds them."""


def normalize_weights(weights: str | None) -> str | None:
    """Maps the UI's spellings of "no weights" ("", "none") to None."""
    if weights is None or str(weights).strip().lower() in ("", "none"):
        return None
    return str(weights)


def mobilenet_alpha(alpha: float) -> float:
    """Returns the ImageNet alpha equal to `alpha`, or raises ValueError."""
    for known in MOBILENET_V2_ALPHAS:
        if abs(float(alpha) - known) < 1e-6:
            return known
    raise ValueError(
        f"MobileNetV2 ImageNet weights exist only for alpha {', '.join(map(str, MOBILENET_V2_ALPHAS))}, "
        f"not {alpha}."
    )


def weights_search_dirs() -> list[Path]:
    """Returns the folders searched for ImageNet weight files, in order.

    Returns:
        Each folder of $ZOIDBERG_WEIGHTS_DIR (os.pathsep-separated), then the Keras cache
        ($KERAS_HOME or ~/.keras)/models, read at call time.
    """
    folders = [Path(part).expanduser() for part in os.environ.get(WEIGHTS_DIR_ENV, "").split(os.pathsep) if part]
    keras_home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    folders.append(Path(keras_home).expanduser() / "models")
    return folders


def imagenet_weights_file_names(architecture: str, alpha: float = 1.0, image_size: int | None = None) -> list[str]:
    """Returns the Keras no-top weight file names for an architecture, preferred first.

    For MobileNetV2, Keras names the file after alpha and the input rows it would pick: the
    image size when it is 96/128/160/192/224, else 224. The convolution weights fit any
    size, so the other rows' files are accepted as fallbacks.

    Args:
        architecture: Registry key of a pretrained-capable architecture.
        alpha: MobileNetV2 width multiplier (ignored by the others).
        image_size: Input side in pixels, or None for the 224-px file first.

    Returns:
        File names, most preferred first.
    """
    backbone = BACKBONES.get(architecture)
    if backbone is None:
        raise ValueError(f"{architecture!r} has no pretrained weights.")
    if backbone.weights_file:
        return [backbone.weights_file]
    rows = [image_size] if image_size in MOBILENET_V2_ROWS else []
    rows += [224] + [size for size in reversed(MOBILENET_V2_ROWS) if size not in rows and size != 224]
    known_alpha = mobilenet_alpha(alpha)
    return [f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(known_alpha)}_{size}_no_top.h5" for size in rows]


def resolve_imagenet_weights(
    architecture: str, alpha: float, weights: str | None, image_size: int | None = None
) -> str | None:
    """Finds a local weights file without ever downloading.

    Args:
        architecture: Registry key.
        alpha: MobileNetV2 width multiplier (ignored by the others).
        weights: None (or "none"/"") for no weights, "imagenet", or a path to a local
            .h5 file.
        image_size: Input side in pixels; picks MobileNetV2's preferred file.

    Returns:
        An absolute file path, or None when no weights are wanted.

    Raises:
        WeightsNotFoundError: The file is not in any searched folder, naming the file and
            the folders to put it in.
        ValueError: The architecture has no ImageNet weights or alpha has none.
    """
    weights = normalize_weights(weights)
    if weights is None:
        return None
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"Weights file {weights} not found; check the path.")
        return str(path.resolve())
    file_names = imagenet_weights_file_names(architecture, alpha, image_size)
    folders = weights_search_dirs()
    for file_name in file_names:
        for folder in folders:
            candidate = folder / file_name
            if candidate.is_file():
                return str(candidate.resolve())
    backbone = BACKBONES[architecture]
    what = f"{backbone.label} (alpha {alpha})" if architecture == "mobilenetv2" else backbone.label
    # The 224-px file is the one Keras uses for most input sizes, so it is the one named.
    wanted = next((name for name in file_names if "_224_" in name), file_names[0])
    raise WeightsNotFoundError(
        f"ImageNet weights for {what} not found. Put {wanted} in {folders[-1]}/ or in ${WEIGHTS_DIR_ENV} "
        f"(searched: {', '.join(str(folder) for folder in folders)}). "
        f"On a machine with internet it is at {backbone.weights_url}{wanted}."
    )



# Seconds to wait for the weights server before saying the machine is offline.
DOWNLOAD_TIMEOUT_S = 10


def download_imagenet_weights(architecture: str, alpha: float = 1.0, *, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> str:
    """Fetches a backbone's official no-top ImageNet file into the Keras cache with Keras' own downloader.

    Only ever called when the user asked (`--download-weights`, `weights --download`, or the
    Train page's button); nothing downloads on its own.

    Args:
        architecture: Registry key of a pretrained-capable architecture.
        alpha: MobileNetV2 width multiplier.
        timeout_s: Socket timeout, so that an offline machine answers in seconds.

    Returns:
        The downloaded file's path.

    Raises:
        WeightsNotFoundError: The download failed (offline, blocked, or interrupted), naming
            the file, its URL and where to put it by hand.
    """
    import socket

    import keras

    file_name = next(name for name in imagenet_weights_file_names(architecture, alpha, 224) if "_224_" in name or "mobilenet" not in name)
    url = BACKBONES[architecture].weights_url + file_name
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        return keras.utils.get_file(file_name, url, cache_subdir="models")
    except Exception as error:  # urllib, socket and HTTP errors all mean the same to the user.
        raise WeightsNotFoundError(
            f"Could not download {file_name} from {url} ({type(error).__name__}: {str(error)[:120]}). This machine may be "
            f"offline: put the file in {weights_search_dirs()[-1]}/ or in ${WEIGHTS_DIR_ENV} by hand."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def weights_inventory() -> list[dict]:
    """Every pretrained backbone's no-top file: where it was found, or where it would go.

    Returns:
        One row per (architecture, alpha): architecture, alpha, file, path (None when absent).
    """
    rows = []
    for architecture in BACKBONES:
        alphas = MOBILENET_V2_ALPHAS if architecture == "mobilenetv2" else (1.0,)
        for alpha in alphas:
            try:
                path = resolve_imagenet_weights(architecture, alpha, "imagenet", 224)
            except WeightsNotFoundError:
                path = None
            names = imagenet_weights_file_names(architecture, alpha, 224)
            rows.append({"architecture": architecture, "alpha": alpha if architecture == "mobilenetv2" else None, "file": names[0], "path": path})
    return rows
