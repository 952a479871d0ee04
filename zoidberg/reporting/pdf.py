"""The report as a PDF, laid out with fpdf2 in the DejaVu Sans font that matplotlib ships."""

from __future__ import annotations

import io
from pathlib import Path

from fpdf import FPDF
from fpdf.fonts import FontFace

from zoidberg.reporting.document import Report, Section

FONT = "DejaVu"
PAGE_WIDTH_MM = 180  # A4 less 15 mm margins.
EXAMPLES_PER_ROW = 3


def _font_files() -> tuple[Path, Path]:
    """Regular and bold DejaVu Sans from matplotlib's data folder (a dependency of the report already)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"


class ReportPDF(FPDF):
    """An A4 document with the run's title in the footer of every page."""

    def __init__(self, footer_text: str):
        super().__init__(format="A4")
        self.footer_text = footer_text
        regular, bold = _font_files()
        self.add_font(FONT, "", str(regular))
        self.add_font(FONT, "B", str(bold))
        self.set_margins(15, 15, 15)
        self.set_auto_page_break(True, margin=18)

    def footer(self):
        self.set_y(-12)
        self.set_font(FONT, "", 7)
        self.set_text_color(110)
        self.cell(0, 5, f"{self.footer_text} · page {self.page_no()}/{{nb}}", align="C")
        self.set_text_color(0)


def _section(pdf: ReportPDF, section: Section) -> None:
    pdf.set_font(FONT, "B", 13)
    pdf.ln(3)
    pdf.multi_cell(0, 7, section.heading, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 9.5)
    for paragraph in section.paragraphs:
        pdf.multi_cell(0, 5, paragraph, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1.5)
    for table in section.tables:
        headings = any(table.columns)
        with pdf.table(first_row_as_headings=headings, headings_style=FontFace(emphasis="BOLD", fill_color=(240, 242, 245)),
                       line_height=5, text_align="LEFT", width=PAGE_WIDTH_MM) as grid:
            if headings:
                grid.row(table.columns)
            for row in table.rows:
                grid.row(row)
        if table.caption:
            pdf.set_font(FONT, "", 7.5)
            pdf.multi_cell(0, 4, table.caption, new_x="LMARGIN", new_y="NEXT")
            pdf.set_font(FONT, "", 9.5)
        pdf.ln(2)
    for chart in section.charts:
        pdf.image(io.BytesIO(chart.png), w=140)
        pdf.set_font(FONT, "", 7.5)
        pdf.multi_cell(0, 4, f"{chart.title}. {chart.caption}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(FONT, "", 9.5)
        pdf.ln(2)
    if section.examples:
        _examples(pdf, section)


def _examples(pdf: ReportPDF, section: Section) -> None:
    """The misclassified X-rays, three to a row, each with its caption."""
    width = (PAGE_WIDTH_MM - 2 * 4) / EXAMPLES_PER_ROW
    for start in range(0, len(section.examples), EXAMPLES_PER_ROW):
        row = section.examples[start : start + EXAMPLES_PER_ROW]
        if pdf.get_y() + width + 22 > pdf.h - 18:
            pdf.add_page()
        top = pdf.get_y()
        for index, example in enumerate(row):
            pdf.image(io.BytesIO(example.png), x=15 + index * (width + 4), y=top, w=width, h=width, keep_aspect_ratio=True)
        pdf.set_font(FONT, "", 7)
        bottom = top + width + 1
        for index, example in enumerate(row):
            pdf.set_xy(15 + index * (width + 4), top + width + 1)
            pdf.multi_cell(width, 3.5, f"{example.name}{' (Grad-CAM)' if example.gradcam else ''}: {example.caption}")
            bottom = max(bottom, pdf.get_y())
        pdf.set_xy(15, bottom + 3)
    pdf.set_font(FONT, "", 9.5)


def render_pdf(report: Report) -> bytes:
    """The report as PDF bytes.

    Args:
        report: What zoidberg.reporting.content.build_report read from the run.

    Returns:
        The PDF document.
    """
    pdf = ReportPDF(f"{report.title} · not a medical device")
    pdf.set_title(report.title)
    pdf.set_creator("Zoidberg 2.0")
    pdf.add_page()
    pdf.set_font(FONT, "B", 16)
    pdf.multi_cell(0, 8, report.title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 8.5)
    pdf.set_text_color(90)
    pdf.multi_cell(0, 5, report.subtitle, new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)
    for section in report.sections:
        _section(pdf, section)
    return bytes(pdf.output())
