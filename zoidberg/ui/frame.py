"""The frame every page passes through: the login gate, the navigation and the disclaimer, whatever address a session starts at."""

from __future__ import annotations

import streamlit as st

from streamlit.errors import StreamlitAPIException

from zoidberg.runs.store import default_runs_dir
from zoidberg.ui.auth import auth_configured, login_gate_ui

# Set by the entry script right before it runs a page; the page takes it back at once.
FRAMED_KEY = "_zoidberg_framed"
# The page a session asked for by its own address, opened once the entry script has framed it.
REQUESTED_PAGE_KEY = "_zoidberg_requested_page"
# Its address's parameters (?data=...), kept across the detour through the entry script.
REQUESTED_QUERY_KEY = "_zoidberg_requested_query"
ENTRY_SCRIPT = "streamlit_app.py"


def mark_framed() -> None:
    """Called by the entry script after the gate and the navigation, right before the page runs."""
    st.session_state[FRAMED_KEY] = True


def sidebar_footer() -> None:
    """Shows where runs are stored and what this tool is not."""
    with st.sidebar:
        st.caption(f"Runs folder: `{default_runs_dir().resolve()}`")
        st.caption("**Research demo — not a medical device.**")


def page_frame_ui(page_path: str) -> None:
    """The first call of every page file: passes when the entry script framed it, else gates it before anything is drawn.

    On a freshly started server, a session that opens a page's own address (say /data) first
    gets that file run by itself, as Streamlit does with a pages/ folder before any session has
    called st.navigation: the entry script's gate would never run. With a login configured,
    such a run is sent straight to the entry script, which gates it, draws the navigation and
    the disclaimer, and then opens the page asked for. Without one there is nothing to guard:
    the page draws the sidebar frame itself and goes on (Streamlit's test runner runs page
    files this way too).

    Args:
        page_path: The page file, as the entry script names it ("pages/data.py").
    """
    if st.session_state.pop(FRAMED_KEY, False):
        # The address's parameters (the chosen folder, say) were set aside for the detour: back into it.
        kept = st.session_state.pop(REQUESTED_QUERY_KEY, None)
        if kept:
            st.query_params.update(kept)
        return
    # A browser's session (it has request headers; Streamlit's test runner has none) goes through the
    # entry script, login or not: the same gate, the same navigation and footer, and once a session
    # has run the entry script the server serves no page file on its own any more.
    if auth_configured() or _from_a_browser():
        st.session_state[REQUESTED_PAGE_KEY] = page_path
        # Switching pages clears the address's parameters: they are kept for the page asked for.
        st.session_state[REQUESTED_QUERY_KEY] = st.query_params.to_dict()
        try:
            st.switch_page(ENTRY_SCRIPT)
        except StreamlitAPIException:
            st.session_state.pop(REQUESTED_PAGE_KEY, None)
            if auth_configured():
                # Should the entry script not be reachable, the gate still stands before any content.
                login_gate_ui()
                st.stop()
    sidebar_footer()


def _from_a_browser() -> bool:
    """Whether this session came over HTTP (request headers present), not from Streamlit's test runner."""
    try:
        return bool(st.context.headers)
    except Exception:  # No script run context at all: nothing to route.
        return False


def requested_page() -> str | None:
    """The page a session asked for by its address before it was framed (taken once), or None."""
    return st.session_state.pop(REQUESTED_PAGE_KEY, None)
