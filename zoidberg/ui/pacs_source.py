"""The Predict page's third source: studies from a PACS over DICOMweb, searched, picked, predicted, and results written back on request."""

from __future__ import annotations

import os
from typing import Any

import streamlit as st

from zoidberg.ui.predict_inputs import ImageInput
from zoidberg.ui.widgets import escape_markdown

URL_VARIABLE = "ZOIDBERG_DICOMWEB_URL"
STUDIES_KEY = "pacs_studies"
FILMS_KEY = "pacs_films"  # SOP Instance UID → bytes already retrieved in this session.
INSTANCES_KEY = "pacs_instances"  # Study UID → its instances, listed once per search (not on every rerun of the page).
MODALITIES = ("any", "CR", "DX")


def _secrets() -> dict:
    """The [dicomweb] section of .streamlit/secrets.toml (url, user, password or token), or {} without one."""
    from streamlit.errors import StreamlitSecretNotFoundError

    try:
        return dict(st.secrets.get("dicomweb", {}))
    except (StreamlitSecretNotFoundError, FileNotFoundError):
        return {}


def study_label(study: dict) -> str:
    """One line of the pick list: date, patient, accession, modalities, description."""
    date = study["StudyDate"]
    shown = f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 else (date or "no date")
    parts = [shown, f"patient {study['PatientID'] or '?'}", f"accession {study['AccessionNumber'] or '–'}", study["ModalitiesInStudy"] or "?",
             study["StudyDescription"]]
    return " · ".join(part for part in parts if part)


def pacs_connection_ui():
    """Draws the URL field and says how it logs in; returns (connection, client) or None."""
    from zoidberg.integrations.dicomweb import connection_from, make_client

    secrets = _secrets()
    url = st.text_input("DICOMweb URL", value=secrets.get("url") or os.environ.get(URL_VARIABLE, ""), key="pacs_url",
                        placeholder="http://localhost:8042/dicom-web",
                        help="The PACS's DICOMweb root (Orthanc: http://HOST:8042/dicom-web). The login comes from the [dicomweb] "
                        "section of .streamlit/secrets.toml (user and password, or token) or from $ZOIDBERG_DICOMWEB_USER, "
                        "$ZOIDBERG_DICOMWEB_PASSWORD, $ZOIDBERG_DICOMWEB_TOKEN; it is never shown. Reading never changes the PACS.").strip()
    if not url:
        return None
    try:
        connection = connection_from(url, secrets)
    except ValueError as error:
        st.error(escape_markdown(str(error)))
        return None
    st.caption(f"Logging in with {escape_markdown(connection.login)}.")
    return connection, make_client(connection)


def study_search_ui(connection, client) -> list[dict]:
    """Draws the search form; returns the studies found (kept in the session until the next search)."""
    from zoidberg.integrations.dicomweb import PacsError, search_studies

    with st.form("pacs_search", border=False):
        left, middle, right = st.columns(3)
        patient_id = left.text_input("Patient ID", key="pacs_patient")
        accession = middle.text_input("Accession number", key="pacs_accession")
        modality = right.selectbox("Modality", MODALITIES, key="pacs_modality")
        dates = st.date_input("Study dates", value=(), key="pacs_dates", help="Leave empty for any date; pick one day or a range.")
        searched = st.form_submit_button("Search the PACS", icon=":material/search:")
    if searched:
        st.session_state[INSTANCES_KEY] = {}
        since, until = (tuple(dates) + (None, None))[:2] if isinstance(dates, (tuple, list)) else (dates, dates)
        if since and until is None:
            until = since
        try:
            st.session_state[STUDIES_KEY] = search_studies(
                client, connection, patient_id=patient_id.strip(), accession=accession.strip(), since=since, until=until,
                modality="" if modality == "any" else modality)
        except PacsError as error:
            st.error(escape_markdown(str(error)))
            st.session_state[STUDIES_KEY] = []
    return st.session_state.get(STUDIES_KEY, [])


def study_inputs(connection, client, study_uid: str) -> list[ImageInput]:
    """A study's films as inputs, as predict --dicomweb lists them (pacs_predict.study_films): retrieved once per session."""
    from zoidberg.integrations.pacs_predict import study_films

    retrieved = st.session_state.setdefault(FILMS_KEY, {})
    listed = st.session_state.setdefault(INSTANCES_KEY, {})
    if study_uid not in listed:
        listed[study_uid] = study_films(client, connection, study_uid, retrieved=retrieved)[0]
    inputs = []
    for instance, source, _ in listed[study_uid]:
        # What a reader recognises first (the series, its view), then the UID that finds the film again.
        name = f"{instance.description or instance.facts.modality or 'film'} ({instance.facts.view_position or 'no view'}) · {instance.sop_uid}"
        inputs.append(ImageInput(name, source.data or b"", source="pacs", record_name=source.name, fields=tuple(source.fields.items()),
                                 refusal=source.refusal))
    return inputs


def pacs_inputs_ui() -> tuple[list[ImageInput], Any]:
    """Draws "…or from a PACS (DICOMweb)": URL, search, pick list.

    Returns:
        (the picked studies' films as inputs, the (connection, client, study UIDs) for writing back, or None).
    """
    from zoidberg.integrations.dicomweb import PacsError

    with st.expander("…or from a PACS (DICOMweb)", icon=":material/cloud_download:", expanded=bool(st.session_state.get("pacs_url"))):
        opened = pacs_connection_ui()
        if opened is None:
            return [], None
        connection, client = opened
        studies = study_search_ui(connection, client)
        if not studies:
            st.caption("No study found yet: search by patient, accession, dates or modality.")
            return [], None
        labels = {study["StudyInstanceUID"]: study_label(study) for study in studies}
        picked = st.multiselect(f"Studies to predict ({len(studies)} found)", list(labels), format_func=labels.get, key="pacs_picked")
        inputs = []
        try:
            for study_uid in picked:
                inputs += study_inputs(connection, client, study_uid)
        except PacsError as error:
            st.error(escape_markdown(str(error)))
            return [], None
        return inputs, (connection, client, picked) if picked else None


def write_back_ui(ensemble, threshold: float | None, target, results) -> None:
    """The button that writes a report and a Grad-CAM capture of each diagnosed film into its study.

    The films are those the page scored (results): decided again at the page's threshold, never scored twice.
    """
    from zoidberg.integrations.dicomweb import PacsError
    from zoidberg.integrations.pacs_predict import PacsPrediction, store_results

    connection, client, study_uids = target
    if not st.button("Write the results back to the PACS", icon=":material/cloud_upload:", key="pacs_write_back",
                     help="Stores, in each study, a DICOM Structured Report (finding, calibrated probability, threshold, run id, "
                     "'research and teaching, not for diagnosis') and a Secondary Capture of the Grad-CAM, for every film that "
                     "got a diagnosis. Refused films get nothing."):
        return
    scored = {result.film.source.name: result for result in results if result.source == "pacs"}
    listed = st.session_state.get(INSTANCES_KEY, {})
    predictions = []
    for study_uid in study_uids:
        for instance, _, dataset in listed.get(study_uid, []):
            result = scored.get(instance.sop_uid)
            if result is not None:
                prediction = PacsPrediction(instance, result.film, dataset)
                prediction.decide(ensemble, threshold, door="page")
                predictions.append(prediction)
    try:
        with st.spinner("Writing the results back ..."):
            written = len(store_results(ensemble, client, connection, predictions))
    except PacsError as error:
        st.error(escape_markdown(str(error)))
        return
    st.success(f"Wrote {written} object(s) to {escape_markdown(connection.url)}: a report and a Grad-CAM capture per diagnosed film.")
