"""AdaptConfig: which run adapts to which site folder, how, and at which operating point."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zoidberg.config import CALIBRATION_METHODS, OperatingPointChoice

# "head": a logistic regression on the parent's log-odds and its frozen backbone features;
# "recalibrate": on the parent's log-odds alone (calibration, member weights and threshold).
ADAPT_METHODS = ("head", "recalibrate")
ADAPT_METHOD_HELP = {
    "head": "a new head on the parent's log-odds and its frozen ImageNet features (needs a frozen member, as fast and best have)",
    "recalibrate": "the parent's log-odds recalibrated on the site: calibration, member weights and threshold, no features",
}
MIN_PARTS, MAX_PARTS = 2, 10


@dataclass(frozen=True)
class AdaptConfig:
    """An adaptation of a finished run to a site, saved as config.json of an "adapt" run.

    Attributes:
        parent: The finished cv or ensemble run that adapts.
        site_dir: The site's labeled folder (NORMAL/ and PNEUMONIA/, or a Kaggle layout), or "" with labels_file.
        labels_file: The site's labels file (data.site_labels: this tool's JSON lines, or a CSV with
            file and label columns), read instead of class folders.
        unlabeled_dir: Optional unlabeled films of the same site: they join the feature
            standardization (what the site's films look like) and the shift check, never a fit.
        method: One of ADAPT_METHODS.
        n_parts: k of the patient-grouped cross-fit that measures the adaptation honestly.
        random_state: Seed of the parts.
        operating_point: The threshold rule; None takes the parent's (prepare_adaptation stores
            which), chosen again on the site's cross-fitted predictions.
        calibration_method: Fitted on the cross-fitted site predictions.
        run_name: Optional name.
    """

    parent: str
    site_dir: str = ""
    labels_file: str | None = None
    unlabeled_dir: str | None = None
    method: str = "head"
    n_parts: int = 5
    random_state: int = 0
    operating_point: OperatingPointChoice | None = None
    calibration_method: str = "platt"
    run_name: str = ""

    def __post_init__(self):
        if not self.parent:
            raise ValueError("Name the run to adapt: --run RUN_ID (see `python -m zoidberg runs`).")
        if not self.site_dir and not self.labels_file:
            raise ValueError("Name the site's labeled films: --data SITE_DIR (NORMAL/ and PNEUMONIA/ inside) or --labels FILE.")
        if self.site_dir and self.labels_file:
            raise ValueError("Give the site's films one way: --data SITE_DIR or --labels FILE, not both.")
        if self.method not in ADAPT_METHODS:
            raise ValueError(f"method must be one of {', '.join(ADAPT_METHODS)}, not {self.method!r}.")
        if not (isinstance(self.n_parts, int) and MIN_PARTS <= self.n_parts <= MAX_PARTS):
            raise ValueError(f"parts must be a whole number from {MIN_PARTS} to {MAX_PARTS} (5 is usual), not {self.n_parts!r}.")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration_method must be one of {', '.join(CALIBRATION_METHODS)}, not {self.calibration_method!r}.")
        if len(self.run_name) > 80:
            raise ValueError("The run name must be at most 80 characters.")

    @property
    def site_name(self) -> str:
        """The site's films as messages name them: the folder, or the labels file."""
        return self.labels_file or self.site_dir

    def to_dict(self) -> dict[str, Any]:
        """The JSON stored in the run."""
        return {
            "parent": self.parent,
            "site_dir": self.site_dir,
            "labels_file": self.labels_file,
            "unlabeled_dir": self.unlabeled_dir,
            "method": self.method,
            "n_parts": self.n_parts,
            "random_state": self.random_state,
            "operating_point": None if self.operating_point is None else self.operating_point.to_dict(),
            "calibration_method": self.calibration_method,
            "run_name": self.run_name,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> AdaptConfig:
        """Reads a stored config (extra keys, such as the parent's data block, are ignored)."""
        keys = ("parent", "site_dir", "labels_file", "unlabeled_dir", "method", "n_parts", "random_state", "calibration_method", "run_name")
        return cls(
            **{key: payload[key] for key in keys if key in payload},
            operating_point=OperatingPointChoice.from_dict(payload["operating_point"]) if payload.get("operating_point") else None,
        )
