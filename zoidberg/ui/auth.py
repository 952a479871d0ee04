"""An opt-in login gate: with an [auth] section in .streamlit/secrets.toml, only logged-in users see the dashboard."""

from __future__ import annotations

import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError


def auth_configured() -> bool:
    """Whether the secrets hold Streamlit's OIDC settings (an [auth] section); False without a secrets file."""
    try:
        return "auth" in st.secrets
    except (StreamlitSecretNotFoundError, FileNotFoundError):
        return False


def user_may_enter() -> bool:
    """Whether the dashboard may be shown: no login is configured, or the user has logged in."""
    return not auth_configured() or bool(st.user.get("is_logged_in", False))


def login_gate_ui() -> None:
    """Stops the script with a login screen until the user has logged in; does nothing when auth is not configured.

    Streamlit's own st.login does the OpenID Connect flow (Google, Microsoft, Okta, Keycloak, ...)
    and keeps the identity in a signed cookie; see the README, "Serving beyond one laptop".
    """
    if not auth_configured():
        return
    if not st.user.get("is_logged_in", False):
        st.title("🩻 Zoidberg 2.0")
        st.write("This dashboard is shared: log in to see its runs and X-rays.")
        st.button("Log in", type="primary", on_click=st.login, key="login")
        st.caption("Research demo — not a medical device.")
        st.stop()
    with st.sidebar:
        who = st.user.get("email") or st.user.get("name") or "you"
        st.caption(f"Logged in as {who}")
        st.button("Log out", on_click=st.logout, key="logout")
