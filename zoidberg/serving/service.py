"""What the HTTP service does with a run, free of HTTP: load it once, read an upload, score it batched, explain it."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from dataclasses import dataclass

import numpy as np

from zoidberg.inference.record import REFUSED
from zoidberg.serving.batcher import MicroBatcher

# An upload larger than this is refused before it is read (a chest film as DICOM is rarely above 30 MB).
DEFAULT_MAX_BODY_BYTES = 32 * 1024**2
# The long side of the Grad-CAM picture a response carries.
GRADCAM_SIDE = 512


@dataclass(frozen=True)
class ServiceSettings:
    """How the service runs, validated once.

    Attributes:
        run_id: The finished run (or ensemble, or adapted run) to serve.
        runs_dir: Its run store (None: the default).
        api_key: Required of every request but /healthz when set (X-API-Key, or Authorization: Bearer).
        max_body_bytes: The largest upload read.
        max_batch: The most images in one forward pass.
        max_wait_ms: How long a request waits for others to share its forward pass.
        max_queue: The most images waiting; beyond it requests get 503 and Retry-After.
        records_log: A JSON-lines log every prediction record is appended to (no file names, no pixels), or None.
    """

    run_id: str
    runs_dir: str | None = None
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = 16
    max_wait_ms: float = 4.0
    max_queue: int = 64
    records_log: str | None = None

    def __post_init__(self):
        if not self.run_id:
            raise ValueError("Name the run to serve: --run RUN_ID (python -m zoidberg runs lists them).")
        if self.max_body_bytes < 1024:
            raise ValueError(f"--max-body-mb must allow at least 1 KB (got {self.max_body_bytes} bytes).")
        if self.max_batch < 1 or self.max_queue < 1:
            raise ValueError("--max-batch and --max-queue must be at least 1.")
        if self.max_wait_ms < 0:
            raise ValueError("--max-wait-ms must be 0 or more.")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ValueError("--api-key must be at least 8 characters (or leave it out for a service on localhost only).")


class UnusableUpload(ValueError):
    """An upload that cannot be predicted: its message says why, for a 4xx answer."""


class PredictionService:
    """A run loaded once, scoring uploads in shared forward passes.

    Args:
        settings: The service's settings.
        ensemble: An already loaded run (tests and Ray Serve replicas load their own otherwise).
    """

    def __init__(self, settings: ServiceSettings, ensemble=None):
        from zoidberg.inference.loading import load_ensemble

        self.settings = settings
        self.ensemble = ensemble if ensemble is not None else load_ensemble(settings.run_id, runs_dir=settings.runs_dir)
        self.run_id = self.ensemble.run.id
        self.batcher = MicroBatcher(self._score_batch, max_batch=settings.max_batch, max_wait_s=settings.max_wait_ms / 1000,
                                    max_queue=settings.max_queue)
        # Grad-CAM takes gradients through the whole network: one at a time keeps the cores for scoring.
        self._explaining = threading.Lock()
        self._card: dict | None = None

    def _score_batch(self, sources: list) -> list:
        """The batcher's forward pass: the one prediction function on the requests waiting together."""
        from zoidberg.inference.scoring import score_films

        return score_films(self.ensemble, sources, keep_images=True)

    async def predict(self, data: bytes, name: str, *, gradcam: bool = False) -> dict:
        """The prediction record of one upload (a refused film's diagnosis null), with a Grad-CAM PNG on request.

        Raises:
            UnusableUpload: For bytes that are no image, or an image the network could not score.
            zoidberg.serving.batcher.QueueFullError: When too many images wait.
        """
        from zoidberg.inference.scoring import FilmSource, record_of

        if not data:
            raise UnusableUpload("The request body is empty: send the image's bytes (PNG, JPEG or DICOM).")
        film = await self.batcher.submit(FilmSource(name, data))
        if not film.ok:
            raise UnusableUpload(f"{name}: {film.error}")
        record = record_of(self.ensemble, film, door="http")
        if self.settings.records_log:
            from zoidberg.monitoring.records_log import append_records

            await asyncio.to_thread(append_records, self.settings.records_log, [record])
        if gradcam:
            # A refused film has no diagnosis, so nothing to explain.
            record["gradcam_png"] = None if record["prediction"] == REFUSED else await asyncio.to_thread(
                self.gradcam_png, film.gray, film.model_input, record["class_index"])
        return record

    def gradcam_png(self, gray: np.ndarray, model_input: np.ndarray, class_index: int) -> str:
        """The Grad-CAM of `class_index` over the film, as base64 PNG."""
        from PIL import Image

        from zoidberg.data.imaging import downscale
        from zoidberg.inference.explain import overlay_heatmap

        with self._explaining:
            heatmap = self.ensemble.gradcam(model_input, class_index)
        picture = overlay_heatmap(downscale(gray, GRADCAM_SIDE), heatmap)
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def model_card(self) -> dict:
        """The run's model card, as export writes it beside a model (computed once)."""
        if self._card is None:
            from zoidberg.inference.export import model_card

            self._card = model_card(self.ensemble.run, self.ensemble, "service", "POST /v1/predict")
        return self._card

    def health(self) -> dict:
        """What /healthz reports: the run, its gate, the queue and the batches so far."""
        return {
            "status": "ok",
            "run_id": self.run_id,
            "gate": self.ensemble.gate is not None,
            "waiting": self.batcher.waiting,
            "max_queue": self.settings.max_queue,
            "batches": self.batcher.batches,
            "images": self.batcher.items,
        }
