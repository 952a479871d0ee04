"""Versions of the packages that decide a run's numbers, recorded in every config.json."""

from __future__ import annotations

import importlib.metadata
import platform

# Read from the installed distributions, so that preparing a run (in the dashboard or the
# CLI) does not import TensorFlow. Each key lists the distributions that provide it, in
# order: TensorFlow is published as a CPU build and a CUDA build.
_DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tf-nightly"),
    "keras": ("keras",),
    "numpy": ("numpy",),
    "scikit-learn": ("scikit-learn",),
    "pillow": ("pillow",),
}


def distribution_version(*names: str) -> str | None:
    """Returns the version of the first installed distribution of `names`, or None."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Returns the versions of Zoidberg, Python, TensorFlow, Keras, NumPy, scikit-learn and Pillow.

    Args:
        extra: More distribution names to record (e.g. "keras-tuner").

    Returns:
        {package: version}; a package that is not installed is left out.
    """
    import zoidberg

    versions = {"zoidberg": zoidberg.__version__, "python": platform.python_version()}
    for key, names in {**_DISTRIBUTIONS, **{name: (name,) for name in extra}}.items():
        version = distribution_version(*names)
        if version is not None:
            versions[key] = version
    return versions
