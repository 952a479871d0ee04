"""The parts of a report: sections of paragraphs, tables, charts and examples, whatever its format."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Table:
    """A table: a header row and rows of already formatted cells."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass(frozen=True)
class Chart:
    """A figure as PNG bytes, with its caption."""

    title: str
    png: bytes
    caption: str = ""


@dataclass(frozen=True)
class Example:
    """One misclassified X-ray: its picture (Grad-CAM over it when it could be made) and what the run said."""

    name: str
    png: bytes
    caption: str
    gradcam: bool


@dataclass
class Section:
    """A heading with its paragraphs, tables, charts and examples, drawn in that order."""

    heading: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    # What this section had to leave out, in one sentence (also among its paragraphs).
    warning: str | None = None


@dataclass
class Report:
    """The whole document."""

    title: str
    subtitle: str
    created: str
    sections: list[Section]

    @property
    def warnings(self) -> list[str]:
        """What the report had to leave out (Grad-CAM when the models cannot be loaded), said to its maker too."""
        return [section.warning for section in self.sections if section.warning]
