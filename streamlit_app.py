"""Zoidberg 2.0 dashboard entry point: the login gate (when configured), page routing and the sidebar footer."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from zoidberg.ui.auth import login_gate_ui, user_may_enter
from zoidberg.ui.frame import mark_framed, requested_page, sidebar_footer
from zoidberg.ui.script_runs import lighten_script_runs

APP_ROOT = Path(__file__).resolve().parent

# (file, title, icon) in menu order; pages whose file is absent are left out of the menu.
PAGES = (
    ("pages/data.py", "Data", "🗂️"),
    ("pages/train.py", "Train", "🏋️"),
    ("pages/compare.py", "Compare", "📊"),
    ("pages/predict.py", "Predict", "🩺"),
    ("pages/label.py", "Label", "🏷️"),
    ("pages/monitor.py", "Monitor", "📈"),
    ("pages/tune.py", "Tune", "🎛️"),
)


def available_pages() -> list:
    """Returns st.Page objects for the page files that exist, Data first (the default).

    Returns:
        The pages.
    """
    existing = [(path, title, icon) for path, title, icon in PAGES if (APP_ROOT / path).is_file()]
    return [
        st.Page(path, title=title, icon=icon, default=index == 0) for index, (path, title, icon) in enumerate(existing)
    ]


st.set_page_config(page_title="Zoidberg 2.0", page_icon="🩻", layout="wide")
pages = available_pages()
# st.navigation comes before the gate, hidden until the user is in: the first session to run it
# makes the server ignore the pages/ folder for every session, so no page address is served
# on its own (zoidberg/ui/frame.py gates and frames one that was, before).
page = st.navigation(pages, position="sidebar" if user_may_enter() else "hidden")
lighten_script_runs()
login_gate_ui()
sidebar_footer()
# A session that started at a page's own address was sent here to be gated: open that page.
asked = requested_page()
if asked:
    st.switch_page(next((item for item in pages if item.url_path == Path(asked).stem), pages[0]))
mark_framed()
page.run()
