"""Reading a PACS over DICOMweb (dicomweb-client): find studies (QIDO-RS), retrieve films (WADO-RS), store results (STOW-RS)."""

from __future__ import annotations

import datetime as dt
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from zoidberg.data.dicom_facts import DicomFacts, facts_verdict

# Where credentials come from when no Streamlit secret gives them: never a command-line flag (it shows in `ps`).
USER_VARIABLE, PASSWORD_VARIABLE, TOKEN_VARIABLE = "ZOIDBERG_DICOMWEB_USER", "ZOIDBERG_DICOMWEB_PASSWORD", "ZOIDBERG_DICOMWEB_TOKEN"
# What a study search returns and shows.
STUDY_FIELDS = ("StudyInstanceUID", "StudyDate", "StudyDescription", "PatientID", "PatientName", "AccessionNumber", "ModalitiesInStudy")
# What an instance search asks for: enough to refuse a CT, an MR or a side view without retrieving its pixels.
INSTANCE_FIELDS = ("SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality", "ViewPosition", "BodyPartExamined", "PatientAge",
                   "PatientBirthDate", "StudyDate", "SeriesDescription", "InstanceNumber")
# Results Zoidberg wrote itself are never read back as films to diagnose.
RESULT_MODALITIES = ("SR", "OT", "SC", "PR", "KO")
MOST_STUDIES = 200
# Tries of one DICOMweb request (a busy or dead server): the first and one more.
RETRY_ATTEMPTS = 2


class PacsError(ValueError):
    """The PACS cannot be reached or answered an error: the message says which and what to check."""


@dataclass(frozen=True)
class PacsConnection:
    """Where the PACS is and how to log in (basic or bearer); repr never shows a secret.

    Attributes:
        url: The DICOMweb root, e.g. http://localhost:8042/dicom-web.
        username: Basic-auth user, or None.
        password: Basic-auth password, or None.
        token: A bearer token, or None (used instead of basic auth when both are given).
        timeout_s: Seconds to wait for each answer.
    """

    url: str
    username: str | None = None
    password: str | None = None
    token: str | None = None
    timeout_s: float = 30.0

    def __post_init__(self):
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"The DICOMweb URL must start with http:// or https:// (got {self.url!r}), e.g. http://localhost:8042/dicom-web.")
        if (self.username is None) != (self.password is None):
            raise ValueError(f"Give both a DICOMweb user and a password (${USER_VARIABLE} and ${PASSWORD_VARIABLE}), or neither.")

    def __repr__(self) -> str:
        login = "bearer token" if self.token else ("basic auth" if self.username else "no login")
        return f"PacsConnection({self.url!r}, {login})"

    @property
    def login(self) -> str:
        """How this connection logs in, in words (never the secret)."""
        return "a bearer token" if self.token else (f"user {self.username}" if self.username else "no login")


# Where Streamlit keeps secrets, in its order: the project's, then the user's (the command line reads the same [dicomweb]).
SECRETS_FILES = (Path(".streamlit") / "secrets.toml", Path("~/.streamlit/secrets.toml"))


def secrets_file_section(files=SECRETS_FILES) -> dict:
    """The [dicomweb] section of the first Streamlit secrets file that has one, or {} (the command line's view of the secrets)."""
    import tomllib

    for path in (Path(file).expanduser() for file in files):
        if not path.is_file():
            continue
        try:
            section = tomllib.loads(path.read_text(encoding="utf-8")).get("dicomweb")
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} cannot be read as TOML ({type(error).__name__}): fix it, or move it away.") from None
        if isinstance(section, Mapping):
            return dict(section)
    return {}


def connection_from(url: str, secrets: Mapping | None = None, environ: Mapping | None = None) -> PacsConnection:
    """A connection to `url`, its credentials from Streamlit-style secrets ([dicomweb] user/password/token), the environment, or the URL.

    A user and password written into the URL (http://user:pw@host/...) are taken as the login when nothing else gives one,
    and the URL is kept without them: it appears in messages, and a secret never does.
    """
    from urllib.parse import urlsplit, urlunsplit

    secrets = dict(secrets or {})
    environ = os.environ if environ is None else environ

    def value(key: str, variable: str) -> str | None:
        return secrets.get(key) or environ.get(variable) or None

    parts = urlsplit(url.strip())
    user, password = value("user", USER_VARIABLE), value("password", PASSWORD_VARIABLE)
    if parts.username is not None:
        if user is None and password is None and value("token", TOKEN_VARIABLE) is None:
            from urllib.parse import unquote

            user, password = unquote(parts.username), unquote(parts.password or "")
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        parts = parts._replace(netloc=netloc + (f":{parts.port}" if parts.port else ""))
    return PacsConnection(urlunsplit(parts).rstrip("/"), user, password, value("token", TOKEN_VARIABLE))


def make_client(connection: PacsConnection):
    """A DICOMwebClient logged in as the connection says."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    if connection.token:
        session.headers["Authorization"] = f"Bearer {connection.token}"
    elif connection.username:
        session.auth = (connection.username, connection.password)
    client = DICOMwebClient(connection.url, session=session, timeout=connection.timeout_s)
    # dicomweb-client retries every failed request 5 times with 2, 4, 8 and 16 s between (its retry decorator
    # retries on any exception, a refused connection included): a dead PACS took 30 s to be reported. One more
    # try after 0.5 s still rides out a busy server's 503.
    client.set_http_retry_params(retry=True, max_attempts=RETRY_ATTEMPTS, wait_exponential_multiplier=250)
    return client


def pacs_call(what: str, connection: PacsConnection, call):
    """Runs one DICOMweb call, turning a refused login, a missing study or an unreachable server into one PacsError sentence."""
    import requests

    try:
        return call()
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise PacsError(f"{connection.url} refused the login ({connection.login}) while {what}: HTTP {status}. Check the "
                            f"credentials (${USER_VARIABLE}/${PASSWORD_VARIABLE}, ${TOKEN_VARIABLE}, or the [dicomweb] secrets).") from None
        if status == 404:
            raise PacsError(f"{connection.url} has nothing at the address used while {what} (HTTP 404): is the URL the DICOMweb "
                            "root (Orthanc: http://HOST:8042/dicom-web), and does the study exist?") from None
        raise PacsError(f"{connection.url} answered HTTP {status} while {what}.") from None
    except requests.RequestException as error:
        raise PacsError(f"Cannot reach {connection.url} while {what}: {type(error).__name__}. Is the PACS running, and is its "
                        "DICOMweb plugin on?") from None


def dicom_date(value: dt.date | str) -> str:
    """A date as DICOM writes it (YYYYMMDD), from a date or YYYY-MM-DD / YYYYMMDD text."""
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    text = str(value).strip()
    for layout in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, layout).strftime("%Y%m%d")
        except ValueError:
            continue
    raise ValueError(f"{value!r} is not a date: write it as YYYY-MM-DD, e.g. 2026-12-01.")


def _text(item: dict, keyword: str) -> str:
    """One attribute of a DICOM JSON result as text ("" when absent); a person name as its alphabetic form."""
    from pydicom.datadict import tag_for_keyword

    element = item.get(f"{tag_for_keyword(keyword):08X}") or {}
    values = element.get("Value") or []
    if not values:
        return ""
    first = values[0]
    if isinstance(first, dict):
        return str(first.get("Alphabetic", ""))
    return "\\".join(str(value) for value in values) if len(values) > 1 else str(first)


def search_studies(client, connection: PacsConnection, *, patient_id: str = "", accession: str = "", since=None, until=None,
                   modality: str = "", limit: int = MOST_STUDIES) -> list[dict]:
    """Studies matching the filters (QIDO-RS), newest first, as plain dicts of STUDY_FIELDS.

    Args:
        client: make_client's client.
        connection: The connection (for messages).
        patient_id: PatientID, or "" for any.
        accession: AccessionNumber, or "" for any.
        since: The first StudyDate (a date or YYYY-MM-DD), or None.
        until: The last StudyDate, or None.
        modality: A modality in the study (CR, DX ...), or "" for any.
        limit: The most studies returned.
    """
    filters = {}
    if patient_id:
        filters["PatientID"] = patient_id
    if accession:
        filters["AccessionNumber"] = accession
    if since or until:
        filters["StudyDate"] = f"{dicom_date(since) if since else ''}-{dicom_date(until) if until else ''}"
    if modality:
        filters["ModalitiesInStudy"] = modality.upper()
    found = pacs_call("searching for studies", connection,
                      lambda: client.search_for_studies(search_filters=filters, fields=list(STUDY_FIELDS), limit=limit))
    studies = [{keyword: _text(item, keyword) for keyword in STUDY_FIELDS} for item in found]
    return sorted(studies, key=lambda study: study["StudyDate"], reverse=True)


@dataclass(frozen=True)
class PacsInstance:
    """One instance of a study, with what its header says (from the search, before any pixel is retrieved).

    Attributes:
        study_uid, series_uid, sop_uid: Its UIDs.
        facts: Modality, body part, view position and age, as a DICOM file's header gives them.
        description: The series description, for the pick list.
    """

    study_uid: str
    series_uid: str
    sop_uid: str
    facts: DicomFacts
    description: str = ""

    @property
    def is_result(self) -> bool:
        """Whether this is a report, capture or presentation state (Zoidberg's own results among them), not a film."""
        return self.facts.modality in RESULT_MODALITIES

    def refusal(self) -> str | None:
        """The one-line reason this instance is not scored (a CT, an MR, a side view, an adult, a report), or None."""
        if self.is_result:
            return f"a {self.facts.modality} object (a report or a capture), not a film"
        verdict = facts_verdict(self.facts)
        return verdict.reason if verdict is not None else None


def study_instances(client, connection: PacsConnection, study_uid: str) -> list[PacsInstance]:
    """Every instance of a study with the header facts that decide whether it is scored (QIDO-RS)."""
    from zoidberg.data.dicom_facts import age_from_fields

    found = pacs_call(f"listing study {study_uid}", connection,
                      lambda: client.search_for_instances(study_instance_uid=study_uid, fields=list(INSTANCE_FIELDS)))
    instances = []
    for item in found:
        facts = DicomFacts(
            _text(item, "Modality").upper(), _text(item, "BodyPartExamined").upper(), _text(item, "ViewPosition").upper(),
            age_from_fields(_text(item, "PatientAge"), _text(item, "PatientBirthDate"), _text(item, "StudyDate")),
        )
        instances.append(PacsInstance(study_uid, _text(item, "SeriesInstanceUID"), _text(item, "SOPInstanceUID"), facts,
                                      _text(item, "SeriesDescription")))
    return instances


def retrieve_bytes(client, connection: PacsConnection, instance: PacsInstance) -> tuple[bytes, object]:
    """The instance as DICOM file bytes (WADO-RS), with its pydicom dataset (the evidence a written result refers to)."""
    import pydicom

    dataset = pacs_call(f"retrieving instance {instance.sop_uid}", connection,
                        lambda: client.retrieve_instance(instance.study_uid, instance.series_uid, instance.sop_uid))
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue(), dataset


def store_datasets(client, connection: PacsConnection, datasets, study_uid: str) -> None:
    """Stores DICOM objects into a study (STOW-RS)."""
    pacs_call(f"storing {len(datasets)} result object(s) into study {study_uid}", connection,
              lambda: client.store_instances(list(datasets), study_instance_uid=study_uid))
