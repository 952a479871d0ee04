"""The report as one self-contained HTML file: figures embedded as data URIs, no script, opens offline."""

from __future__ import annotations

import base64

import jinja2

from zoidberg.reporting.document import Report

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ report.title }}</title>
<style>
  body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #1f2933; line-height: 1.45; }
  h1 { font-size: 1.6rem; margin-bottom: .2rem; }
  h2 { font-size: 1.2rem; border-bottom: 2px solid #d0d7de; padding-bottom: .2rem; margin-top: 2rem; }
  .subtitle { color: #57606a; margin-top: 0; }
  .notice { background: #fff4e5; border-left: 4px solid #e8590c; padding: .6rem .9rem; }
  table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
  th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: left; vertical-align: top; }
  th { background: #f6f8fa; }
  caption { caption-side: bottom; text-align: left; color: #57606a; font-size: .8rem; padding-top: .3rem; }
  figure { margin: 1rem 0; }
  figure img { max-width: 100%; }
  figcaption { color: #57606a; font-size: .85rem; }
  .examples { display: grid; grid-template-columns: repeat(3, 1fr); gap: .8rem; }
  .examples figure { margin: 0; }
</style>
</head>
<body>
<h1>{{ report.title }}</h1>
<p class="subtitle">{{ report.subtitle }}</p>
{% for section in report.sections %}
<section>
<h2>{{ section.heading }}</h2>
{% for paragraph in section.paragraphs %}<p{% if loop.first and section.heading.startswith("Intended") %} class="notice"{% endif %}>{{ paragraph }}</p>
{% endfor %}
{% for table in section.tables %}
<table>
{% if table.columns | select | list %}<thead><tr>{% for column in table.columns %}<th>{{ column }}</th>{% endfor %}</tr></thead>{% endif %}
<tbody>{% for row in table.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tbody>
{% if table.caption %}<caption>{{ table.caption }}</caption>{% endif %}
</table>
{% endfor %}
{% for chart in section.charts %}
<figure><img alt="{{ chart.title }}" src="data:image/png;base64,{{ chart.png | b64 }}"><figcaption><b>{{ chart.title }}.</b> {{ chart.caption }}</figcaption></figure>
{% endfor %}
{% if section.examples %}<div class="examples">
{% for example in section.examples %}<figure><img alt="{{ example.name }}" src="data:image/png;base64,{{ example.png | b64 }}"><figcaption><b>{{ example.name }}</b>{% if example.gradcam %} (Grad-CAM){% endif %}: {{ example.caption }}</figcaption></figure>
{% endfor %}</div>{% endif %}
</section>
{% endfor %}
</body>
</html>
"""


def render_html(report: Report) -> str:
    """The report as an HTML document with every figure embedded.

    Args:
        report: What zoidberg.reporting.content.build_report read from the run.

    Returns:
        The HTML text (UTF-8), with no external resource.
    """
    environment = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    environment.filters["b64"] = lambda data: base64.b64encode(data).decode("ascii")
    return environment.from_string(TEMPLATE).render(report=report)
