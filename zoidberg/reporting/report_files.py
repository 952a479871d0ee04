"""Writing a run's report into the run (reports/report.html, report.pdf), and copying it where the user asked."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from zoidberg.runs.store import REPORTS_DIR, Run, write_atomically

REPORT_FORMATS = ("html", "pdf")
REPORT_STEM = "report"


def report_format(path: str | Path) -> str:
    """The format a file name asks for, from its suffix.

    Raises:
        ValueError: For a suffix other than .html or .pdf.
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix == "htm":
        suffix = "html"
    if suffix not in REPORT_FORMATS:
        raise ValueError(f"A report is written as .html or .pdf, not {Path(path).name!r}: end --out with .html or .pdf.")
    return suffix


def report_path(run: Run, fmt: str) -> Path:
    """Where the run keeps its report in a format."""
    return run.path / REPORTS_DIR / f"{REPORT_STEM}.{fmt}"


def write_report(run: Run, formats=REPORT_FORMATS, *, out: str | Path | None = None, examples: int | None = None, gradcam: bool = True,
                 ensemble=None, on_warning: Callable[[str], None] | None = None) -> list[Path]:
    """Builds the run's report once and writes it in each format inside the run (and to `out` when given).

    Args:
        run: A completed cross-validation or ensemble run.
        formats: Among "html" and "pdf".
        out: A file to copy the report to as well; its suffix picks the one format.
        examples: How many misclassified X-rays to show [default: content.DEFAULT_EXAMPLES].
        gradcam: Draw Grad-CAM over them.
        ensemble: The run's loaded models, when the caller has them already.
        on_warning: Told each thing the report had to leave out (Grad-CAM when the models
            cannot be loaded), which the report also says.

    Returns:
        The files written, the run's own first.
    """
    from zoidberg.reporting.content import DEFAULT_EXAMPLES, build_report

    if out is not None:
        formats = (report_format(out),)
    report = build_report(run, examples=DEFAULT_EXAMPLES if examples is None else examples, gradcam=gradcam, ensemble=ensemble)
    for warning in report.warnings if on_warning else ():
        on_warning(warning)
    written = []
    for fmt in formats:
        if fmt == "html":
            from zoidberg.reporting.html import render_html

            data = render_html(report).encode("utf-8")
        else:
            from zoidberg.reporting.pdf import render_pdf

            data = render_pdf(report)
        path = report_path(run, fmt)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda temporary, data=data: temporary.write_bytes(data))
        written.append(path)
        if out is not None:
            target = Path(out).expanduser()
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                # Staged, so that a full disk leaves what was at `out` before, never a 0-byte file.
                write_atomically(target, lambda temporary: shutil.copyfile(path, temporary))
            except OSError as error:
                raise OSError(error.errno, error.strerror or str(error), str(target)) from error
            written.append(target.resolve())
    return written
