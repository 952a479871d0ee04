"""Predicting from a real Orthanc over DICOMweb, and writing the results back as DICOM (SR and Secondary Capture)."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.orthanc import CT_STUDY_UID, PASSWORD, STUDY_UID, USER
from zoidberg.cli import main
from zoidberg.inference.record import REFUSED


@pytest.fixture
def pacs_login(monkeypatch):
    monkeypatch.setenv("ZOIDBERG_DICOMWEB_USER", USER)
    monkeypatch.setenv("ZOIDBERG_DICOMWEB_PASSWORD", PASSWORD)


def predict(capsys, trained, orthanc, *args):
    code = main(["--runs-dir", str(trained.dir), "predict", "--run", trained.ids["baseline"], "--dicomweb", orthanc.dicomweb, *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def instance_count(orthanc) -> int:
    return len(orthanc.rest("GET", "/instances"))


def test_studies_are_found_by_patient_accession_dates_and_modality(orthanc, pacs_login):
    from zoidberg.integrations.dicomweb import connection_from, make_client, search_studies

    connection = connection_from(orthanc.dicomweb)
    client = make_client(connection)
    assert {study["StudyInstanceUID"] for study in search_studies(client, connection, patient_id="CHILD-7")} >= {STUDY_UID, CT_STUDY_UID}
    assert [study["StudyInstanceUID"] for study in search_studies(client, connection, accession="ACC-7")] == [STUDY_UID]
    assert [study["StudyInstanceUID"] for study in search_studies(client, connection, since="2026-12-02")] == [CT_STUDY_UID]
    assert [study["StudyInstanceUID"] for study in search_studies(client, connection, since="2026-11-30", until="2026-12-01")] == [STUDY_UID]
    assert STUDY_UID not in [study["StudyInstanceUID"] for study in search_studies(client, connection, modality="CT")]
    assert "secret" not in repr(connection) and PASSWORD not in repr(connection)


def test_a_study_is_predicted_from_the_cli_and_the_pacs_is_left_unchanged(trained, orthanc, pacs_login, capsys, tmp_path):
    before = instance_count(orthanc)
    code, out, err = predict(capsys, trained, orthanc, "--study", STUDY_UID, "--json")
    assert code == 0, err
    records = {record["file"]: record for record in json.loads(out)}
    assert instance_count(orthanc) == before, "reading must never change the PACS"
    assert set(records) == {f"{STUDY_UID}.1.1", f"{STUDY_UID}.2.1", f"{STUDY_UID}.3.1"}
    side = records[f"{STUDY_UID}.3.1"]
    assert side["prediction"] == REFUSED and "side view" in side["ood_reason"] and side.get("probability") is None
    for sop in (f"{STUDY_UID}.1.1", f"{STUDY_UID}.2.1"):
        assert records[sop]["study_uid"] == STUDY_UID and records[sop]["prediction"] in ("normal", "pneumonia", REFUSED)
    # The PACS door scores as predict on files does: each film's pixels written as a PNG give the same record to 1e-5
    # (the MONOCHROME1 film as the film it inverts).
    from tests import imagegen
    from zoidberg.integrations.dicomweb import connection_from, make_client, retrieve_bytes, study_instances

    connection = connection_from(orthanc.dicomweb)
    client = make_client(connection)
    pngs = {}
    for instance in study_instances(client, connection, STUDY_UID):
        if instance.sop_uid in (f"{STUDY_UID}.1.1", f"{STUDY_UID}.2.1"):
            _, source = retrieve_bytes(client, connection, instance)
            pixels = source.pixel_array.astype(np.uint8)
            upright = 255 - pixels if source.PhotometricInterpretation == "MONOCHROME1" else pixels
            pngs[instance.sop_uid] = tmp_path / f"{instance.sop_uid}.png"
            pngs[instance.sop_uid].write_bytes(imagegen.png_bytes(upright))
    assert main(["--runs-dir", str(trained.dir), "predict", "--run", trained.ids["baseline"], "--json", *map(str, pngs.values())]) == 0
    by_file = {Path(record["file"]).stem: record for record in json.loads(capsys.readouterr().out)}
    for sop in pngs:
        assert records[sop]["door"] == "pacs" and by_file[sop]["door"] == "cli"
        for field in ("prediction", "label", "probability", "probability_raw", "in_distribution", "ood_score"):
            expected = by_file[sop][field]
            assert records[sop][field] == (pytest.approx(expected, abs=1e-5) if isinstance(expected, float) else expected), (sop, field)


def test_a_ct_study_found_by_date_is_refused_in_one_line(trained, orthanc, pacs_login, capsys, tmp_path):
    out_csv = tmp_path / "pacs.csv"
    code, out, _ = predict(capsys, trained, orthanc, "--since", "2026-12-02", "--csv", out_csv)
    assert code == 0
    assert "1 study found" in out and "REFUSED" in out and "modality is CT" in out
    assert "modality is CT" in out_csv.read_text()


def test_results_are_written_back_only_when_asked_and_read_back_with_their_values(trained, orthanc, pacs_login, capsys):
    from zoidberg.integrations.dicom_results import DISCLAIMER, read_result_report
    from zoidberg.integrations.dicomweb import connection_from, make_client

    client = make_client(connection_from(orthanc.dicomweb))
    # Another test may have written this run's results into the study already: they are kept once (the UIDs are the run's).
    present = {item["00080018"]["Value"][0] for item in client.search_for_instances(STUDY_UID)}
    before = instance_count(orthanc)
    code, out, err = predict(capsys, trained, orthanc, "--study", STUDY_UID, "--json", "--store-results")
    assert code == 0, err
    records = json.loads(out)
    diagnosed = [record for record in records if record["prediction"] not in (REFUSED, None)]
    assert diagnosed, "the tiny run refused every film: nothing to write back"
    written = {uid for record in diagnosed for uid in record["written_back"]}
    assert len(written) == 2 * len(diagnosed) and instance_count(orthanc) == before + len(written - present)
    for record in diagnosed:
        report_uid, capture_uid = record["written_back"]
        series = {item["0020000E"]["Value"][0]: item for item in client.search_for_series(STUDY_UID)}
        report = next(client.retrieve_instance(STUDY_UID, uid, report_uid) for uid in series
                      if client.search_for_instances(STUDY_UID, uid, search_filters={"SOPInstanceUID": report_uid}))
        values = read_result_report(report)
        assert report.Modality == "SR" and report.StudyInstanceUID == STUDY_UID and report.PatientID == "CHILD-7"
        assert values["Zoidberg run id"] == trained.ids["baseline"] and values["Intended use"] == DISCLAIMER
        assert values["Finding"].lower() == record["label"].lower()
        expected = record["probability_calibrated"] if record["probability_calibrated"] is not None else record["probability"]
        assert values["Probability of pneumonia"] == pytest.approx(expected, abs=1e-6)
        assert values["Decision threshold"] == pytest.approx(record["threshold"], abs=1e-6)
        assert report.SpecificCharacterSet == "ISO_IR 192"
        # The model card is named by the run and the commands that give it, never by a path on the server.
        assert trained.ids["baseline"] in values["Model card"] and str(trained.dir) not in values["Model card"]
        capture = next(client.retrieve_instance(STUDY_UID, uid, capture_uid) for uid in series
                       if client.search_for_instances(STUDY_UID, uid, search_filters={"SOPInstanceUID": capture_uid}))
        assert capture.BurnedInAnnotation == "YES" and capture.PhotometricInterpretation == "RGB" and capture.PatientID == "CHILD-7"
        assert capture.pixel_array.ndim == 3
    # Predicting the study again leaves Zoidberg's own results out, and writes nothing.
    code, out, _ = predict(capsys, trained, orthanc, "--study", STUDY_UID)
    assert code == 0 and f"{2 * len(diagnosed)} report or capture object(s) left out" in out
    assert instance_count(orthanc) == before + len(written - present)


@pytest.mark.parametrize("setting, words", [("wrong-password", "refused the login"), ("unreachable", "Cannot reach")])
def test_a_wrong_login_or_a_dead_pacs_is_one_sentence(trained, orthanc, capsys, monkeypatch, setting, words):
    monkeypatch.setenv("ZOIDBERG_DICOMWEB_USER", USER)
    monkeypatch.setenv("ZOIDBERG_DICOMWEB_PASSWORD", "not-the-password" if setting == "wrong-password" else PASSWORD)
    url = orthanc.dicomweb if setting == "wrong-password" else "http://127.0.0.1:9/dicom-web"
    code = main(["--runs-dir", str(trained.dir), "predict", "--run", trained.ids["baseline"], "--dicomweb", url, "--study", STUDY_UID])
    err = capsys.readouterr().err
    assert code != 0 and words in err and "Traceback" not in err and "not-the-password" not in err


@pytest.mark.parametrize("args, words", [(["--dicomweb", "http://x/dicom-web"], "--study UID"), (["--dicomweb", "ftp://x", "--study", "1"], "http://"),
                                         (["img.png", "--dicomweb", "http://x", "--study", "1"], "not both"), ([], "Name the image files")])
def test_predict_says_what_a_pacs_request_lacks(trained, capsys, args, words):
    code = main(["--runs-dir", str(trained.dir), "predict", "--run", trained.ids["baseline"], *args])
    assert code != 0 and words in capsys.readouterr().err


def test_the_predict_page_searches_picks_predicts_and_writes_back_a_study(trained, orthanc, pacs_login, monkeypatch):
    from tests.apptest_helpers import assert_no_exception, button, open_app, texts

    monkeypatch.setenv("ZOIDBERG_RUNS_DIR", str(trained.dir))
    monkeypatch.setenv("ZOIDBERG_DICOMWEB_URL", orthanc.dicomweb)
    before = instance_count(orthanc)
    app = open_app(page="pages/predict.py")
    app.selectbox(key="predict_run").set_value(trained.ids["baseline"]).run()
    assert f"Logging in with user {USER}" in texts(app.caption) and PASSWORD not in str(app)
    app.text_input(key="pacs_accession").set_value("ACC-7")
    button(app, "Search the PACS").click().run()
    assert_no_exception(app)
    picker = app.multiselect(key="pacs_picked")
    assert picker.options == [next(option for option in picker.options if "ACC-7" in option)]
    picker.set_value([STUDY_UID]).run()
    assert_no_exception(app)
    table = app.dataframe[0].value
    assert len(table) == 3 and set(table["source"]) == {"PACS"}
    side = table[table["file"].str.endswith(f"(LL) · {STUDY_UID}.3.1")].iloc[0]
    # Refused by its header, unread: no diagnosis, and the reason in the table as at every door.
    assert side["prediction"] == "refused" and "side view" in side["ood_reason"] and (side["probability"] is None or side["probability"] != side["probability"])
    assert instance_count(orthanc) == before, "searching and predicting must not write"
    button(app, "Write the results back").click().run()
    assert_no_exception(app)
    assert "Wrote" in texts(app.success)
    written = int(texts(app.success).split("Wrote ")[1].split(" ")[0])
    # Results this run wrote before (another test, the same study) are kept once: the PACS grows by the new ones only.
    after = instance_count(orthanc)
    assert written > 0 and before <= after <= before + written
    button(app, "Write the results back").click().run()
    assert_no_exception(app)
    assert instance_count(orthanc) == after


def test_the_predict_page_names_a_wrong_login_without_showing_it(trained, orthanc, monkeypatch):
    from tests.apptest_helpers import assert_no_exception, button, open_app, texts

    monkeypatch.setenv("ZOIDBERG_RUNS_DIR", str(trained.dir))
    monkeypatch.setenv("ZOIDBERG_DICOMWEB_URL", orthanc.dicomweb)
    monkeypatch.setenv("ZOIDBERG_DICOMWEB_USER", USER)
    monkeypatch.setenv("ZOIDBERG_DICOMWEB_PASSWORD", "not-the-password")
    app = open_app(page="pages/predict.py")
    button(app, "Search the PACS").click().run()
    assert_no_exception(app)
    assert "refused the login" in texts(app.error) and "not-the-password" not in texts(app.error)


def test_the_disclaimer_is_burnt_in_legibly_whatever_the_film_size():
    from zoidberg.integrations.dicom_results import MIN_CAPTURE_WIDTH, burn_in_disclaimer

    lines = ["RESEARCH AND TEACHING, NOT FOR DIAGNOSIS.", "Zoidberg run 20261206-194352-cv-1f9e74: pneumonia (p = 0.954, threshold 0.643)."]
    small = burn_in_disclaimer(np.zeros((224, 224, 3), np.uint8), lines)
    assert small.shape[1] == MIN_CAPTURE_WIDTH and small.shape[0] > MIN_CAPTURE_WIDTH
    band = small[MIN_CAPTURE_WIDTH:]
    yellow = (band[..., 0] > 200) & (band[..., 1] > 200) & (band[..., 2] < 80)
    assert yellow.any() and not yellow[:, -4:].any(), "the disclaimer must fit inside the picture"
    wide = burn_in_disclaimer(np.zeros((500, 1000, 3), np.uint8), lines)
    assert wide.shape[1] == 1000 and (wide[:500] == 0).all()


def test_label_next_names_a_studys_films_by_their_uids_and_asks_of_the_side_view(trained, orthanc, pacs_login, capsys):
    before = instance_count(orthanc)
    code = main(["--runs-dir", str(trained.dir), "label-next", "--run", trained.ids["baseline"], "--dicomweb", orthanc.dicomweb,
                 "--study", STUDY_UID, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    picks = {pick["file"]: pick for pick in json.loads(captured.out)}
    assert set(picks) == {f"{STUDY_UID}.1.1", f"{STUDY_UID}.2.1", f"{STUDY_UID}.3.1"}
    side = picks[f"{STUDY_UID}.3.1"]
    assert side["ask"] == "not_usable?" and side["chosen_by"] == "gate" and "side view" in side["reason"]
    assert all(pick["study_uid"] == STUDY_UID and pick["sop_uid"] == file for file, pick in picks.items())
    assert instance_count(orthanc) == before, "choosing films to label never writes"


def test_the_label_page_labels_a_pacs_studys_films_kept_beside_the_labels(trained, orthanc, pacs_login, monkeypatch, tmp_path):
    from tests.apptest_helpers import assert_no_exception, button, open_app
    from zoidberg.adaptation.labeling import labels_path_for
    from zoidberg.data.site_labels import read_labels

    monkeypatch.setenv("ZOIDBERG_RUNS_DIR", str(trained.dir))
    monkeypatch.setenv("ZOIDBERG_DICOMWEB_URL", orthanc.dicomweb)
    monkeypatch.setenv("ZOIDBERG_LABELS_DIR", str(tmp_path / "labels"))
    app = open_app(page="pages/label.py")
    app.selectbox(key="label_run").set_value(trained.ids["baseline"]).run()
    app.radio(key="label_source").set_value("From a PACS (DICOMweb)").run()
    app.text_input(key="pacs_accession").set_value("ACC-7")
    button(app, "Search the PACS").click().run()
    app.multiselect(key="pacs_picked").set_value([STUDY_UID]).run()
    assert_no_exception(app)
    kept = sorted(path.name for path in (tmp_path / "labels" / "pacs").iterdir())
    # The side view is refused by its header and never retrieved: only the two frontal films are kept.
    assert kept == [f"{STUDY_UID}.1.1.dcm", f"{STUDY_UID}.2.1.dcm"]
    button(app, "Normal (N)").click().run()
    assert_no_exception(app)
    labels = read_labels(labels_path_for(str((tmp_path / "labels" / "pacs").resolve()), trained.ids["baseline"]))
    assert [Path(entry.file).name for entry in labels.films.values()][0] in kept


def test_an_unknown_study_is_an_error_not_zero_films(trained, orthanc, pacs_login, capsys):
    code, out, err = predict(capsys, trained, orthanc, "--study", "1.2.826.0.1.999999", "--json")
    assert code != 0 and "has no study 1.2.826.0.1.999999" in err and "Traceback" not in err


def test_credentials_in_the_url_log_in_and_are_never_printed(trained, orthanc, capsys):
    from zoidberg.integrations.dicomweb import connection_from

    connection = connection_from("http://ana:s%40cret@localhost:8042/dicom-web/", environ={})
    assert connection.url == "http://localhost:8042/dicom-web" and connection.username == "ana" and connection.password == "s@cret"
    # The URL's login reaches a real Orthanc, with nothing in the environment.
    with_login = orthanc.dicomweb.replace("http://", f"http://{USER}:{PASSWORD}@")
    code = main(["--runs-dir", str(trained.dir), "predict", "--run", trained.ids["baseline"], "--dicomweb", with_login, "--study", STUDY_UID])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert PASSWORD not in captured.out + captured.err
    # A wrong password in the URL is refused in a sentence that never shows it.
    wrong = orthanc.dicomweb.replace("http://", f"http://{USER}:not-the-{PASSWORD}@")
    code = main(["--runs-dir", str(trained.dir), "predict", "--run", trained.ids["baseline"], "--dicomweb", wrong, "--study", STUDY_UID])
    captured = capsys.readouterr()
    assert code != 0 and "refused the login" in captured.err and f"not-the-{PASSWORD}" not in captured.out + captured.err


def test_the_cli_reads_the_dicomweb_secrets_the_dashboard_reads(trained, orthanc, capsys, monkeypatch, tmp_path):
    for variable in ("ZOIDBERG_DICOMWEB_USER", "ZOIDBERG_DICOMWEB_PASSWORD", "ZOIDBERG_DICOMWEB_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text(f'[dicomweb]\nuser = "{USER}"\npassword = "{PASSWORD}"\n')
    code, _, err = predict(capsys, trained, orthanc, "--study", STUDY_UID)
    assert code == 0, err


def test_the_secrets_file_is_never_committed():
    import subprocess

    from tests.apptest_helpers import APP

    ignored = subprocess.run(["git", "check-ignore", "-q", ".streamlit/secrets.toml"], cwd=APP.parent, check=False)
    assert ignored.returncode == 0, ".streamlit/secrets.toml must be in .gitignore: the README says never to commit it"


def test_the_report_keeps_its_unicode_through_a_dicom_file():
    # "sensitivity ≥ 95 %" was stored as "sensitivity ? 95 %": no character set was declared.
    import io

    import pydicom

    from tests.orthanc import film_dicom
    from zoidberg.integrations.dicom_results import make_result_report, read_result_report

    source = pydicom.dcmread(io.BytesIO(film_dicom(np.full((32, 32), 90, np.uint8), study="1.2.3", series="1.2.3.1", sop="1.2.3.1.1",
                                                   ViewPosition="PA")))
    record = {"prediction": "pneumonia", "label": "pneumonia", "probability": 0.9, "probability_calibrated": 0.9, "probability_raw": 0.8,
              "threshold": 0.4, "in_distribution": True, "run_id": "run-1"}
    report = make_result_report(source, record, operating_point="sensitivity ≥ 95 % on the run's out-of-fold predictions", model_card="card",
                                version="2.0")
    buffer = io.BytesIO()
    report.save_as(buffer, enforce_file_format=True)
    again = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    assert read_result_report(again)["Operating point"] == "sensitivity ≥ 95 % on the run's out-of-fold predictions"


def test_the_capture_names_the_probability_on_its_thresholds_scale():
    # It read "p = 0.969, threshold 0.643": a calibrated probability beside a threshold on the raw scale.
    from zoidberg.integrations.dicom_results import capture_caption

    record = {"run_id": "r", "label": "pneumonia", "probability": 0.71, "probability_raw": 0.71, "probability_calibrated": 0.969,
              "threshold": 0.643, "scale": "raw"}
    caption = capture_caption(record)
    assert "0.710 raw, threshold 0.643 on that scale" in caption and "0.969" not in caption


def test_a_dead_pacs_is_tried_twice_not_five_times_with_backoff(trained, capsys):
    # dicomweb-client's retry tried a closed connection 5 times, 30 s in all, before the one sentence came.
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = []

    def hang_up():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        code = main(["--runs-dir", str(trained.dir), "predict", "--run", trained.ids["baseline"], "--dicomweb", f"http://127.0.0.1:{port}/dicom-web",
                     "--study", STUDY_UID])
    finally:
        server.close()
    assert code != 0 and "Cannot reach" in capsys.readouterr().err
    assert len(accepted) == 2


def test_writing_a_studys_results_again_keeps_what_the_run_wrote(trained, orthanc, pacs_login, capsys):
    # Running --store-results twice wrote a second report and capture per film (15 -> 19 instances).
    code, out, err = predict(capsys, trained, orthanc, "--study", STUDY_UID, "--json", "--store-results")
    assert code == 0, err
    first = {uid for record in json.loads(out) for uid in record.get("written_back") or []}
    after_first = instance_count(orthanc)
    code, out, err = predict(capsys, trained, orthanc, "--study", STUDY_UID, "--json", "--store-results")
    assert code == 0, err
    assert {uid for record in json.loads(out) for uid in record.get("written_back") or []} == first
    assert instance_count(orthanc) == after_first


def test_monitor_scores_a_period_of_studies_dated_by_the_study(trained, orthanc, pacs_login, capsys):
    code = main(["--runs-dir", str(trained.dir), "monitor", "--run", trained.ids["baseline"], "--dicomweb", orthanc.dicomweb,
                 "--since", "2026-11-30", "--until", "2026-12-01", "--json"])
    assert code == 0, capsys.readouterr().err
    (window,) = json.loads(capsys.readouterr().out)
    # The child's study of 2026-12-01: its three films, the side view refused by its header; against the training films.
    assert window["window"] == "2026-W49" and window["films"] == 3 and window["refused"] >= 1
    assert window["shift"][0]["against"] == "training films" and isinstance(window["alert"], bool)
