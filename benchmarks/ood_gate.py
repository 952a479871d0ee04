"""The out-of-distribution gate measured: how many non-X-ray inputs it refuses and how many real films of a new site.

The gate is fitted exactly as a cross-validation run fits it (zoidberg.data.ood.fit_gate on
the training films at the run's size, thresholds from patient-grouped out-of-fold scores).
The site sample is only scored, never used to set anything.

The out-of-distribution corpus is assembled from what the installed packages ship, so it
needs no download: scikit-image's photographs, documents, micrographs and phantom, pydicom's
CT, MR and other DICOM test images, and the full-resolution training originals turned,
upside down and inverted (never site films).

    python benchmarks/ood_gate.py [--size 224] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SKIMAGE_IMAGES = (
    "astronaut", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock", "coffee", "coins", "colorwheel",
    "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page",
    "retina", "rocket", "shepp_logan_phantom", "text",
)
PYDICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "liver_1frame.dcm", "JPEG2000.dcm", "rtdose_1frame.dcm", "examples_overlay.dcm", "emri_small.dcm", "MR2_J2KR.dcm", "US1_J2KR.dcm")


def _to_uint8_gray(array) -> np.ndarray:
    """Any scikit-image sample as 2-D uint8 (colour to luminance, other types min-max scaled)."""
    from PIL import Image

    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.float64)
    if array.ndim == 3:
        array = np.asarray(Image.fromarray(np.asarray(array[..., :3], dtype=np.uint8)).convert("L"))
    if array.dtype != np.uint8:
        array = ((array - array.min()) / (np.ptp(array) + 1e-9) * 255).astype(np.uint8)
    return array


def out_of_distribution_corpus(fullres_films: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Named 2-D uint8 images that no chest X-ray model should diagnose."""
    import skimage.data
    from pydicom.data import get_testdata_file

    from zoidberg.data.imaging import ImageDecodeError, decode_grayscale

    corpus: dict[str, np.ndarray] = {}
    for name in SKIMAGE_IMAGES:
        image = _to_uint8_gray(getattr(skimage.data, name)())
        corpus[f"photo-or-document:{name}"] = image
        # A crop of each, as a user's own photograph would be framed differently.
        height, width = image.shape
        corpus[f"photo-or-document:{name}:crop"] = image[height // 8 : height - height // 4, width // 4 : width - width // 8]
    for file_name in PYDICOM_FILES:
        path = get_testdata_file(file_name)
        if path is None:
            continue
        try:
            corpus[f"dicom:{file_name}"] = decode_grayscale(path)
        except ImageDecodeError:
            continue
    for index, film in enumerate(fullres_films):
        corpus[f"turned-film:{index}:90"] = np.ascontiguousarray(np.rot90(film, 1))
        corpus[f"turned-film:{index}:270"] = np.ascontiguousarray(np.rot90(film, 3))
        corpus[f"upside-down-film:{index}"] = np.ascontiguousarray(np.rot90(film, 2))
        corpus[f"inverted-film:{index}"] = 255 - film
    rng = np.random.default_rng(0)
    corpus["synthetic:noise"] = rng.integers(0, 256, (256, 256), dtype=np.uint8)
    corpus["synthetic:black"] = np.zeros((256, 256), np.uint8)
    corpus["synthetic:white"] = np.full((256, 256), 255, np.uint8)
    return corpus


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="The run's image size.")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args(argv)
    train_dir, site_dir, fullres_dir = (SHARED_DATA / name for name in ("chest_xray_224", "chest_xray_site_sample", "chest_xray_fullres"))
    if not train_dir.is_dir():
        print(f"{train_dir} is absent: the gate benchmark needs the real films in ../shared.")
        return 0

    from zoidberg.data.dataset import load_dataset
    from zoidberg.data.folds import make_folds
    from zoidberg.data.imaging import decode_grayscale, resize_square
    from zoidberg.data.ood import fit_gate

    started = time.perf_counter()
    dataset = load_dataset(train_dir, image_size=args.size)
    rows = dataset.training_indices()
    fold_of = make_folds(dataset.labels[rows], dataset.patients[rows], n_splits=args.folds, random_state=42)
    fit_started = time.perf_counter()
    gate = fit_gate(dataset.images[rows], fold_of)
    fit_seconds = time.perf_counter() - fit_started

    def as_model_sees(images):
        return [resize_square(image, args.size) for image in images]

    site = load_dataset(site_dir, image_size=args.size, purpose="evaluation") if site_dir.is_dir() else None
    fullres_paths = sorted(fullres_dir.rglob("*.jpeg")) if fullres_dir.is_dir() else []
    fullres = [decode_grayscale(path) for path in fullres_paths]
    corpus = out_of_distribution_corpus(fullres[::10])

    score_started = time.perf_counter()
    ood_verdicts = gate.verdicts(as_model_sees(corpus.values()))
    score_seconds = (time.perf_counter() - score_started) / max(len(corpus), 1)
    site_verdicts = gate.verdicts(site.images) if site is not None else []
    fullres_verdicts = gate.verdicts(as_model_sees(fullres))

    def flagged(verdicts):
        return sum(not verdict.in_distribution for verdict in verdicts)

    print(f"Gate: {gate.describe()}; fitted in {fit_seconds:.1f} s ({time.perf_counter() - started:.1f} s with loading); load {os.getloadavg()[0]:.2f}")
    print(f"{'set':48s} {'images':>7s} {'refused':>8s} {'rate':>7s}")
    groups: dict[str, list] = {}
    for name, verdict in zip(corpus, ood_verdicts):
        groups.setdefault(name.split(":")[0], []).append(verdict)
    table = {}
    for group, verdicts in groups.items():
        table[group] = (len(verdicts), flagged(verdicts))
    table["all non-X-ray inputs"] = (len(ood_verdicts), flagged(ood_verdicts))
    if site_verdicts:
        table["site sample (real films of a new site)"] = (len(site_verdicts), flagged(site_verdicts))
    table["full-resolution training originals"] = (len(fullres_verdicts), flagged(fullres_verdicts))
    for name, (count, refused) in table.items():
        print(f"{name:48s} {count:7d} {refused:8d} {100 * refused / max(count, 1):6.1f}%")
    missed = [name for name, verdict in zip(corpus, ood_verdicts) if verdict.in_distribution]
    print(f"Not refused: {', '.join(missed) or 'none'}")
    if site is not None:
        refused_site = [site.paths[index] for index, verdict in enumerate(site_verdicts) if not verdict.in_distribution]
        print(f"Site films refused: {', '.join(refused_site) or 'none'}")
    print(f"Scoring: {1000 * score_seconds:.2f} ms per image")
    if args.json:
        args.json.write_text(json.dumps({"table": table, "missed": missed, "fit_seconds": fit_seconds, "score_ms": 1000 * score_seconds}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
