"""A real Orthanc (Debian's orthanc and orthanc-dicomweb) on localhost for the PACS tests, and studies to put in it."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from conftest import free_port

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
USER, PASSWORD = "zoidberg", "pacs-test-password"


def orthanc_missing() -> str | None:
    """Why Orthanc cannot run here, or None."""
    if not Path(ORTHANC).exists():
        return "Orthanc is not installed (apt install orthanc orthanc-dicomweb; .ci/run installs it)"
    if not Path(DICOMWEB_PLUGIN).exists():
        return "Orthanc's DICOMweb plugin is not installed (apt install orthanc-dicomweb)"
    return None




@dataclass
class OrthancServer:
    """A running Orthanc: its REST root, DICOMweb root and login."""

    process: subprocess.Popen
    url: str
    log: Path

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def rest(self, method: str, path: str, **kwargs):
        import requests

        answer = requests.request(method, f"{self.url}{path}", auth=(USER, PASSWORD), timeout=30, **kwargs)
        answer.raise_for_status()
        return answer.json() if answer.content else None

    def upload(self, data: bytes) -> dict:
        return self.rest("POST", "/instances", data=data, headers={"Content-Type": "application/dicom"})

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_orthanc(folder: Path) -> OrthancServer:
    """Starts Orthanc on a free localhost port with basic auth and DICOMweb, storing into `folder`."""
    import requests

    port = free_port()
    config = {
        "Name": "ZoidbergTest", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [DICOMWEB_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = folder / "orthanc.log"
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/system", auth=(USER, PASSWORD), timeout=2).ok:
                return OrthancServer(process, url, log)
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"Orthanc did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


STUDY_UID = "1.2.826.0.1.3680043.10.1234.77"
CT_STUDY_UID = "1.2.826.0.1.3680043.10.1234.78"


def film_dicom(pixels: np.ndarray, *, study: str, series: str, sop: str, **tags) -> bytes:
    """A DICOM film with consistent UIDs (file meta included), pixels and tags."""
    import pydicom

    from tests import imagegen

    photometric = tags.pop("photometric", "MONOCHROME2")
    dataset = pydicom.dcmread(io.BytesIO(imagegen.dicom_bytes(pixels, photometric=photometric, tags=tags)))
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID = study, series, sop
    dataset.file_meta.MediaStorageSOPInstanceUID = sop
    if "SOPClassUID" in tags:
        dataset.file_meta.MediaStorageSOPClassUID = tags["SOPClassUID"]
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def clinic_study(films: list[np.ndarray]) -> dict[str, bytes]:
    """One child's chest study: a frontal DX, the same film as MONOCHROME1, a side view; and a CT study beside it.

    Returns:
        SOP Instance UID → file bytes.
    """
    frontal, other = films[0], films[1]
    root = STUDY_UID
    child = {"PatientID": "CHILD-7", "PatientName": "Test^Child", "PatientAge": "003Y", "StudyDate": "20261201", "AccessionNumber": "ACC-7",
             "BodyPartExamined": "CHEST"}
    return {
        f"{root}.1.1": film_dicom(frontal, study=root, series=f"{root}.1", sop=f"{root}.1.1", ViewPosition="PA", **child),
        # The same child's film stored inverted, as many CR systems write it.
        f"{root}.2.1": film_dicom(255 - other, study=root, series=f"{root}.2", sop=f"{root}.2.1", ViewPosition="AP", photometric="MONOCHROME1", **child),
        f"{root}.3.1": film_dicom(frontal, study=root, series=f"{root}.3", sop=f"{root}.3.1", ViewPosition="LL", **child),
        f"{CT_STUDY_UID}.1.1": film_dicom(
            frontal, study=CT_STUDY_UID, series=f"{CT_STUDY_UID}.1", sop=f"{CT_STUDY_UID}.1.1", Modality="CT",
            SOPClassUID="1.2.840.10008.5.1.4.1.1.2", **{**child, "StudyDate": "20261202", "AccessionNumber": "ACC-8"}),
    }
