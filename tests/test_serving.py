"""The HTTP prediction service over a real socket, with a real HTTP client: endpoints, bad uploads, keys, batching."""

import asyncio
import base64
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from conftest import free_port

from tests import imagegen
from zoidberg.inference.record import FIELD_NAMES, RECORD_SCHEMA_VERSION, REFUSED
from zoidberg.serving.app import build_app
from zoidberg.serving.service import PredictionService, ServiceSettings

KEY = "test-key-0123456789"




class LiveServer:
    """uvicorn in a thread on a free port, stopped at the end."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def service(trained):
    return PredictionService(ServiceSettings(run_id=trained.ids["baseline"], runs_dir=str(trained.dir), api_key=KEY, max_body_bytes=4 * 1024**2))


@pytest.fixture(scope="module")
def url(service):
    app = build_app(lambda: service, api_key=KEY, max_body_bytes=service.settings.max_body_bytes)
    with LiveServer(app) as address:
        yield address


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as http:
        yield http


def films(demo_dir, count=4):
    return sorted((demo_dir / "test").rglob("*.jpeg"))[:count]


def test_health_needs_no_key_and_names_the_run(url, trained):
    answer = httpx.get(f"{url}/healthz")
    assert answer.status_code == 200 and answer.json()["status"] == "ok" and answer.json()["run_id"] == trained.ids["baseline"]


def test_the_model_card_states_the_operating_point_and_intended_use(client, trained):
    card = client.get("/v1/model").json()
    assert card["run_id"] == trained.ids["baseline"] and card["not_a_medical_device"] is True
    assert "threshold" in card["operating_point"] and "Not a medical device" in card["intended_use"]
    assert card["model_facts"]["threshold_rule"]["threshold"] == pytest.approx(card["operating_point"]["threshold"])


def test_the_docs_need_the_key_and_swagger_ui_comes_from_the_service_itself(url):
    for path in ("/openapi.json", "/docs"):
        assert httpx.get(f"{url}{path}").status_code == 401
        assert httpx.get(f"{url}{path}", headers={"X-API-Key": "wrong-key-000"}).status_code == 403
    schema = httpx.get(f"{url}/openapi.json", headers={"X-API-Key": KEY}).json()
    assert {"/v1/predict", "/v1/model", "/healthz"} <= set(schema["paths"])
    assert "image/jpeg" in schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    # A browser sends no header: /docs?key= passes the key on to the schema it loads.
    page = httpx.get(f"{url}/docs", params={"key": KEY})
    assert page.status_code == 200 and f"/openapi.json?key={KEY}" in page.text
    assert "cdn" not in page.text.lower() and "/docs/static/swagger-ui-bundle.js" in page.text
    assert httpx.get(f"{url}/docs/static/swagger-ui-bundle.js").status_code == 200
    assert httpx.get(f"{url}/openapi.json", params={"key": KEY}).status_code == 200


def test_every_request_is_logged_without_patient_data(client, demo_dir, caplog):
    from zoidberg.serving.access_log import LOGGER_NAME

    film = films(demo_dir, 1)[0]
    with caplog.at_level("INFO", logger=LOGGER_NAME):
        client.post("/v1/predict", content=film.read_bytes(), headers={"Content-Type": "image/jpeg"}, params={"name": "Doe^Jane.jpeg"})
        client.post("/v1/predict", content=b"not an image", headers={"Content-Type": "image/png"}, params={"name": "Doe^Jane.png"})
        side = imagegen.dicom_bytes(imagegen.xray_like(64, 64), tags={"ViewPosition": "LL"})
        client.post("/v1/predict", content=side, headers={"Content-Type": "application/dicom"}, params={"name": "Doe^Jane.dcm"})
        httpx.get(f"{client.base_url}/v1/model")
    lines = [json.loads(record.getMessage()) for record in caplog.records if record.name == LOGGER_NAME]
    assert [(line["path"], line["status"]) for line in lines] == [("/v1/predict", 200), ("/v1/predict", 422), ("/v1/predict", 200),
                                                                     ("/v1/model", 401)]
    assert lines[0]["request_bytes"] == film.stat().st_size and lines[0]["response_bytes"] > 0 and lines[0]["latency_ms"] > 0
    assert lines[1]["reason"] == "unreadable image" and "side view" in lines[2]["reason"] and lines[3]["reason"] == "no API key"
    assert lines[0]["time"].endswith("Z") and set(lines[0]) == {"time", "method", "path", "status", "latency_ms", "request_bytes",
                                                                 "response_bytes", "reason"}
    assert "Doe" not in caplog.text and KEY not in caplog.text


@pytest.mark.parametrize("kind", ["jpeg", "png", "dicom"])
def test_predict_answers_the_record_for_jpeg_png_and_dicom(client, service, demo_dir, kind):
    from PIL import Image

    film = np.asarray(Image.open(films(demo_dir, 1)[0]).convert("L"))
    body, content_type = {
        "jpeg": (imagegen.jpeg_bytes(film, quality=95), "image/jpeg"),
        "png": (imagegen.png_bytes(film), "image/png"),
        "dicom": (imagegen.dicom_bytes(film), "application/dicom"),
    }[kind]
    answer = client.post("/v1/predict", content=body, headers={"Content-Type": content_type}, params={"name": f"film.{kind}"})
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert record["schema_version"] == RECORD_SCHEMA_VERSION and record["file"] == f"film.{kind}"
    assert set(record) <= set(FIELD_NAMES)
    if record["prediction"] != REFUSED:
        assert 0 <= record["probability_raw"] <= 1 and record["threshold"] == pytest.approx(service.ensemble.threshold)
        assert record["spread"] >= 0 and len(record["per_fold"]) == len(service.ensemble.folds)
    assert "in_distribution" in record


def test_a_multipart_upload_and_gradcam(client, demo_dir):
    film = films(demo_dir, 1)[0]
    answer = client.post("/v1/predict", files={"file": (film.name, film.read_bytes(), "image/jpeg")}, params={"gradcam": 1})
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert record["file"] == film.name
    if record["prediction"] != REFUSED:
        assert base64.b64decode(record["gradcam_png"])[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("body, content_type, status, words", [
    (imagegen.text_bytes(), "image/jpeg", 422, "not an image"),
    (imagegen.truncated_jpeg(), "image/jpeg", 422, "upload"),
    (b"", "image/png", 422, "empty"),
    (b"{}", "application/json", 415, "Content-Type application/json"),
    (b"x", "", 415, "(none)"),
])
def test_bad_uploads_get_a_4xx_that_names_the_problem(client, body, content_type, status, words):
    answer = client.post("/v1/predict", content=body, headers={"Content-Type": content_type} if content_type else {})
    assert answer.status_code == status and words in answer.json()["error"], answer.text
    assert "Traceback" not in answer.text


def test_a_50_mb_body_is_refused_before_it_is_read(url, service):
    scored_before = service.batcher.items
    try:
        answer = httpx.post(f"{url}/v1/predict", content=b"\0" * (50 * 1024**2), headers={"Content-Type": "image/png", "X-API-Key": KEY}, timeout=60)
    except httpx.WriteError:  # The server may close the socket while the rest is still being sent: refused either way.
        answer = None
    if answer is not None:
        assert answer.status_code == 413 and "larger than this service reads" in answer.json()["error"]
    assert service.batcher.items == scored_before


def test_a_streamed_body_without_length_is_cut_at_the_limit(url):
    def chunks():
        for _ in range(80):
            yield b"\0" * (64 * 1024)

    answer = httpx.post(f"{url}/v1/predict", content=chunks(), headers={"Content-Type": "image/png", "X-API-Key": KEY}, timeout=60)
    assert answer.status_code == 413


@pytest.mark.parametrize("headers, status", [({}, 401), ({"X-API-Key": "wrong-key-000"}, 403), ({"Authorization": f"Bearer {KEY}"}, 200)])
def test_the_api_key_is_required(url, demo_dir, headers, status):
    answer = httpx.post(f"{url}/v1/predict", content=films(demo_dir, 1)[0].read_bytes(), headers={"Content-Type": "image/jpeg", **headers}, timeout=60)
    assert answer.status_code == status, answer.text
    assert httpx.get(f"{url}/v1/model", headers=headers).status_code == status


def test_32_concurrent_requests_give_what_one_at_a_time_gives_in_shared_passes(client, url, service, demo_dir):
    paths = (films(demo_dir, 8) * 4)[:32]
    one_by_one = [client.post("/v1/predict", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"}).json() for path in paths]
    batches_before = service.batcher.batches

    async def all_at_once():
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": KEY, "Content-Type": "image/jpeg"}, timeout=120) as http:
            return await asyncio.gather(*(http.post("/v1/predict", content=path.read_bytes()) for path in paths))

    answers = asyncio.run(all_at_once())
    assert all(answer.status_code == 200 for answer in answers)
    together = [answer.json() for answer in answers]
    for single, shared in zip(one_by_one, together):
        assert shared["prediction"] == single["prediction"]
        assert shared["probability_raw"] == pytest.approx(single["probability_raw"], abs=1e-5)
    # Shared forward passes: fewer batches than requests.
    assert service.batcher.batches - batches_before < len(paths)


def test_a_full_queue_answers_503_with_retry_after(trained, demo_dir):
    slow = PredictionService(ServiceSettings(run_id=trained.ids["baseline"], runs_dir=str(trained.dir), max_queue=1, max_batch=1, max_wait_ms=0))
    scoring = slow.batcher.score
    slow.batcher.score = lambda items: (time.sleep(0.5), scoring(items))[1]
    app = build_app(lambda: slow, api_key=None, max_body_bytes=4 * 1024**2)
    body = films(demo_dir, 1)[0].read_bytes()
    with LiveServer(app) as address:
        async def flood():
            async with httpx.AsyncClient(base_url=address, headers={"Content-Type": "image/jpeg"}, timeout=60) as http:
                return await asyncio.gather(*(http.post("/v1/predict", content=body) for _ in range(6)))

        answers = asyncio.run(flood())
    statuses = sorted(answer.status_code for answer in answers)
    assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}
    busy = next(answer for answer in answers if answer.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]


@pytest.mark.parametrize("changes, words", [({"run_id": ""}, "--run"), ({"max_batch": 0}, "--max-batch"), ({"api_key": "short"}, "--api-key")])
def test_settings_say_what_to_change(changes, words):
    with pytest.raises(ValueError, match=words):
        ServiceSettings(**{"run_id": "r", **changes})


def test_serve_names_a_missing_run_in_one_line(runs_dir, capsys):
    from zoidberg.cli import main

    assert main(["--runs-dir", str(runs_dir), "serve", "--run", "20990101-000000-cv-000000"]) != 0
    err = capsys.readouterr().err
    assert "20990101-000000-cv-000000" in err and "Traceback" not in err


def test_the_same_app_on_ray_serve_with_two_replicas(trained, demo_dir):
    pytest.importorskip("ray.serve")
    from zoidberg.serving.ray_serve import start_ray_service, stop_ray_service

    settings = ServiceSettings(run_id=trained.ids["baseline"], runs_dir=str(trained.dir), api_key=KEY)
    local = PredictionService(settings)
    port = free_port()
    started = start_ray_service(settings, host="127.0.0.1", port=port, replicas=2, address=None)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:  # serve.run returns before the proxy answers.
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Ray Serve did not answer in 2 minutes"
            time.sleep(0.5)
        paths = films(demo_dir, 4)

        async def all_at_once():
            async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": KEY, "Content-Type": "image/jpeg"}, timeout=120) as http:
                return await asyncio.gather(*(http.post("/v1/predict", content=path.read_bytes(), params={"name": path.name}) for path in paths * 2))

        answers = asyncio.run(all_at_once())
        assert all(answer.status_code == 200 for answer in answers), [answer.text for answer in answers]
        expected = {path.name: asyncio.run(local.predict(path.read_bytes(), path.name)) for path in paths}
        for answer in answers:
            record = answer.json()
            assert record["prediction"] == expected[record["file"]]["prediction"]
            assert record["probability_raw"] == pytest.approx(expected[record["file"]]["probability_raw"], abs=1e-5)
        assert httpx.post(f"{url}/v1/predict", content=b"{}", headers={"Content-Type": "application/json", "X-API-Key": KEY}).status_code == 415
        assert httpx.get(f"{url}/v1/model").status_code == 401
    finally:
        stop_ray_service(started)


def test_serve_names_a_port_in_use_before_loading_the_run(runs_dir, capsys):
    from zoidberg.cli import main

    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        code = main(["--runs-dir", str(runs_dir), "serve", "--run", "20990101-000000-cv-000000", "--port", str(port)])
    err = capsys.readouterr().err
    assert code != 0 and f"Port {port} on 127.0.0.1 is in use" in err and "Traceback" not in err


def test_the_key_comes_from_a_file_or_the_environment_and_a_flag_is_warned_of(tmp_path, capsys, monkeypatch):
    # A key on the command line shows in every user's `ps`.
    from zoidberg.cli.main import build_parser
    from zoidberg.cli.serve import api_key_from

    parser = build_parser()
    key_file = tmp_path / "key"
    key_file.write_text("a-long-enough-secret-key\n")
    assert api_key_from(parser.parse_args(["serve", "--run", "r", "--api-key-file", str(key_file)])) == "a-long-enough-secret-key"
    assert "Warning" not in capsys.readouterr().err
    assert api_key_from(parser.parse_args(["serve", "--run", "r", "--api-key", "a-long-enough-secret-key"])) == "a-long-enough-secret-key"
    assert "visible to every user" in capsys.readouterr().err
    monkeypatch.setenv("ZOIDBERG_API_KEY", "from-the-environment-key")
    assert api_key_from(parser.parse_args(["serve", "--run", "r"])) == "from-the-environment-key"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        api_key_from(parser.parse_args(["serve", "--run", "r", "--api-key-file", str(tmp_path / "empty")]))
    with pytest.raises(ValueError, match="Cannot read the key file"):
        api_key_from(parser.parse_args(["serve", "--run", "r", "--api-key-file", str(tmp_path / "none")]))


def test_the_same_pixels_get_the_same_record_through_every_door(client, service, trained, demo_dir, tmp_path, capsys):
    """PNG and DICOM of the same pixels, through predict, the Predict page, label-next's scoring and HTTP: one record.

    A side view (refused by its DICOM header) is refused at every door, with no label and no probability.
    """
    from PIL import Image

    from zoidberg.cli import main
    from zoidberg.inference.scoring import predict_files
    from zoidberg.ui import predict_inputs, predict_results

    folder = tmp_path / "films"
    folder.mkdir()
    for index, path in enumerate(films(demo_dir, 2)):
        # Not the full 0..255 range: a decoder that stretched an 8-bit DICOM would score it differently.
        pixels = (np.asarray(Image.open(path).convert("L")) * 0.75 + 20).astype(np.uint8)
        (folder / f"film{index}.png").write_bytes(imagegen.png_bytes(pixels))
        (folder / f"film{index}.dcm").write_bytes(imagegen.dicom_bytes(pixels, bits_stored=8))
    (folder / "side.dcm").write_bytes(imagegen.dicom_bytes(imagegen.xray_like(64, 64), tags={"ViewPosition": "LL"}))
    paths = sorted(folder.iterdir())
    ensemble = service.ensemble
    assert main(["predict", "--run", ensemble.run.id, "--runs-dir", str(trained.dir), "--json", *map(str, paths)]) == 0
    doors = {"cli": {Path(record["file"]).name: record for record in json.loads(capsys.readouterr().out)}}
    doors["label"] = {Path(record["file"]).name: record for record in predict_files(ensemble, paths, door="label")}
    doors["page"] = {path.name: predict_results.process_image(ensemble, predict_inputs.ImageInput(path.name, path.read_bytes()))
                     .record(ensemble, None) for path in paths}
    doors["http"] = {}
    for path in paths:
        answer = client.post("/v1/predict", content=path.read_bytes(), params={"name": path.name},
                             headers={"Content-Type": "application/dicom" if path.suffix == ".dcm" else "image/png"})
        assert answer.status_code == 200, answer.text
        doors["http"][path.name] = answer.json()
    compared = ("prediction", "label", "probability", "probability_raw", "probability_calibrated", "threshold", "in_distribution", "ood_score")
    for door, records in doors.items():
        assert {record["door"] for record in records.values()} == {door}
        for name, record in records.items():
            assert record["schema_version"] == RECORD_SCHEMA_VERSION and record["predicted_at"].endswith("Z")
            for field in compared:
                expected, got = doors["cli"][name].get(field), record.get(field)
                assert got == (pytest.approx(expected, abs=1e-5) if isinstance(expected, float) else expected), (door, name, field)
        for index in range(2):
            # The same pixels as PNG and as DICOM: the same probability to 1e-5.
            assert records[f"film{index}.dcm"]["probability_raw"] == pytest.approx(records[f"film{index}.png"]["probability_raw"], abs=1e-5)
        side = records["side.dcm"]
        assert side["prediction"] == REFUSED and side["label"] is None and side["probability"] is None, door
        assert "side view" in side["ood_reason"]


def test_the_service_appends_each_record_to_its_log_without_the_file_name(service, demo_dir, tmp_path):
    from zoidberg.monitoring.records_log import read_records

    log = tmp_path / "records.jsonl"
    settings = ServiceSettings(run_id=service.settings.run_id, runs_dir=service.settings.runs_dir, records_log=str(log))
    logging_service = PredictionService(settings, ensemble=service.ensemble)
    answer = asyncio.run(logging_service.predict(films(demo_dir, 1)[0].read_bytes(), "Doe^Jane.jpeg"))
    (logged,) = read_records(log)
    assert "file" not in logged and "Doe" not in log.read_text() and logged["door"] == "http"
    assert logged["probability_raw"] == answer["probability_raw"] and logged["predicted_at"] == answer["predicted_at"]


def test_the_access_log_goes_to_a_rotated_file_or_says_what_is_wrong(tmp_path):
    import logging

    from zoidberg.serving.access_log import LOGGER_NAME, access_entry, configure_access_log

    with pytest.raises(ValueError, match="does not exist"):
        configure_access_log(str(tmp_path / "missing" / "access.log"))
    logger = configure_access_log(str(tmp_path / "access.log"))
    try:
        logger.info(json.dumps(access_entry(method="POST", path="/v1/predict", status=413, seconds=0.01, request_bytes=10, response_bytes=5)))
        (line,) = (tmp_path / "access.log").read_text().splitlines()
        assert json.loads(line)["reason"] == "body too large"
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.propagate = True
        logging.getLogger(LOGGER_NAME).setLevel(logging.NOTSET)
