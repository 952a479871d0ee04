"""The HTTP face of a PredictionService: POST /v1/predict, GET /v1/model, GET /healthz, OpenAPI docs, JSON errors."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from zoidberg.inference.decisions import INTENDED_USE
from zoidberg.inference.record import RECORD_SCHEMA_VERSION, REFUSED
from zoidberg.serving.access_log import AccessLogMiddleware
from zoidberg.serving.batcher import QueueFullError
from zoidberg.serving.service import PredictionService, UnusableUpload

# Bodies read as the image itself; multipart/form-data carries it as a file field (curl -F file=@film.jpeg).
IMAGE_TYPES = ("image/png", "image/jpeg", "application/dicom", "application/octet-stream")
MULTIPART = "multipart/form-data"
# Seconds a client is asked to wait when the queue is full.
RETRY_AFTER_S = 1


class ServiceError(Exception):
    """An answer other than 200, with the sentence the client reads."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past `limit` bytes: by Content-Length before anything is read, else as it streams in."""
    declared = request.headers.get("content-length")
    too_large = f"The upload is larger than this service reads ({limit / 1024**2:.0f} MB, --max-body-mb)."
    if declared is not None:
        if not declared.isdigit():
            raise ServiceError(400, "The Content-Length header is not a number.")
        if int(declared) > limit:
            raise ServiceError(413, too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServiceError(413, too_large)
        chunks.append(chunk)
    return b"".join(chunks)


async def upload_of(request: Request, limit: int, name: str | None) -> tuple[bytes, str]:
    """(the image's bytes, its name) from a raw image body or a multipart form's first file."""
    kind = _content_type(request)
    if kind not in (*IMAGE_TYPES, MULTIPART):
        accepted = ", ".join((*IMAGE_TYPES, MULTIPART))
        raise ServiceError(415, f"Content-Type {kind or '(none)'} is not an image this service reads: send one of {accepted} "
                                "(curl: -H 'Content-Type: image/jpeg' --data-binary @film.jpeg, or -F file=@film.jpeg).")
    body = await read_body(request, limit)
    if kind != MULTIPART:
        return body, name or "upload"
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream():
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=10, max_part_size=limit).parse()
    except MultiPartException as error:
        raise ServiceError(400, f"The multipart form cannot be read: {error.message}") from None
    files = [value for value in form.values() if isinstance(value, UploadFile)]
    if not files:
        raise ServiceError(400, "The multipart form holds no file: send the image as a file field (curl -F file=@film.jpeg).")
    data = await files[0].read()
    return data, name or files[0].filename or "upload"


def make_key_check(api_key: str | None, *, query: bool = False) -> Callable:
    """A dependency that lets a request through when it carries the key (X-API-Key, or Authorization: Bearer), or when none is set.

    Args:
        api_key: The key, or None for none.
        query: Also take it from `?key=` (the docs only: a browser opening /docs sends no header).
    """

    def check(request: Request) -> None:
        if not api_key:
            return
        sent = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if sent is None and authorization.lower().startswith("bearer "):
            sent = authorization[7:].strip()
        if sent is None and query:
            sent = request.query_params.get("key")
        if not sent:
            raise ServiceError(401, "This service needs an API key: send it in the X-API-Key header (or Authorization: Bearer).",
                               {"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(sent.encode(), api_key.encode()):
            raise ServiceError(403, "The API key is wrong.")

    return check


def add_docs(app: FastAPI, key_check) -> None:
    """/openapi.json and /docs (Swagger UI 5, the static files of the swagger-ui-py package) behind the key, taken from ?key= too."""
    import importlib.util
    from pathlib import Path

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    # Only the package's files are used (its Python side is not imported): Swagger UI 5 reads OpenAPI 3.1.
    swagger_static = Path(importlib.util.find_spec("swagger_ui").origin).parent / "static"
    # Swagger UI's own scripts and styles: public code, nothing of the service, so no key is asked for them.
    app.mount("/docs/static", StaticFiles(directory=str(swagger_static)), name="swagger-ui")

    @app.get("/openapi.json", include_in_schema=False, dependencies=[key_check])
    async def openapi() -> dict:
        return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=[key_check])
    async def docs(request: Request):
        from urllib.parse import urlencode

        key = request.query_params.get("key")
        return get_swagger_ui_html(
            openapi_url="/openapi.json" + (f"?{urlencode({'key': key})}" if key else ""), title=f"{app.title}: docs",
            swagger_js_url="/docs/static/swagger-ui-bundle.js", swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
        )


def build_app(service_factory: Callable[[], PredictionService], *, api_key: str | None, max_body_bytes: int) -> FastAPI:
    """The FastAPI app over a service made on first use (once per process: a Ray Serve replica makes its own).

    Args:
        service_factory: Makes the PredictionService (loads the run).
        api_key: The key every request but /healthz must carry, or None.
        max_body_bytes: The largest upload read.

    Returns:
        The app.
    """
    # The docs answer behind the key, like every route but /healthz, and Swagger UI comes from this
    # service, not a CDN (a hospital's closed network reaches none).
    app = FastAPI(
        title="Zoidberg prediction service",
        version=RECORD_SCHEMA_VERSION,
        description=f"Pneumonia on pediatric chest X-rays, from a finished Zoidberg run. {INTENDED_USE}",
        docs_url=None, redoc_url=None, openapi_url=None,
    )
    app.add_middleware(AccessLogMiddleware)
    held: list[PredictionService] = []

    def service() -> PredictionService:
        if not held:
            held.append(service_factory())
        return held[0]

    app.state.service = service
    key_check = Depends(make_key_check(api_key))
    docs_key_check = Depends(make_key_check(api_key, query=True))
    add_docs(app, docs_key_check)

    @app.exception_handler(ServiceError)
    async def _service_error(_, error: ServiceError):
        return _error(error.status, error.message, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_, error: StarletteHTTPException):
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, item.get('loc', ())))}: {item.get('msg')}" for item in error.errors())
        return _error(422, f"The request is not valid: {problems}")

    @app.exception_handler(Exception)
    async def _unexpected(_, error: Exception):  # Never a traceback to the client; the server's log keeps it.
        return _error(500, f"The service failed on this request ({type(error).__name__}); its log has the details.")

    @app.post(
        "/v1/predict",
        summary="Predict one chest X-ray",
        dependencies=[key_check],
        openapi_extra={"requestBody": {"required": True, "content": {
            **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in IMAGE_TYPES},
            MULTIPART: {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}},
        }}},
        responses={400: {"description": "Unreadable form"}, 401: {"description": "No API key"}, 403: {"description": "Wrong API key"},
                   413: {"description": "Body too large"}, 415: {"description": "Not an image type"},
                   422: {"description": "Bytes that are no readable image"}, 503: {"description": "Queue full: retry"}},
    )
    async def predict(request: Request, gradcam: bool = Query(False, description="Add a Grad-CAM overlay as base64 PNG (gradcam_png)."),
                      name: str | None = Query(None, description="The name the record's `file` carries.")) -> dict:
        """The prediction record (README, "The prediction record") of a PNG, JPEG or DICOM: label, raw and
        calibrated probability, threshold, the spread across folds and the gate's `in_distribution`.
        A film the gate refuses answers `prediction: REFUSED` with no probability."""
        data, file_name = await upload_of(request, max_body_bytes, name)
        try:
            record = await service().predict(data, file_name, gradcam=gradcam)
            if record.get("prediction") == REFUSED:
                request.state.refusal = record.get("ood_reason")
            return record
        except UnusableUpload as error:
            raise ServiceError(422, str(error)) from None
        except QueueFullError as error:
            raise ServiceError(503, f"The service is busy ({error}): retry in a moment.", {"Retry-After": str(RETRY_AFTER_S)}) from None

    @app.get("/v1/model", summary="The served run's model card", dependencies=[key_check])
    async def model() -> dict:
        """What the model is, how it was validated, its operating point and intended use."""
        return service().model_card()

    @app.get("/healthz", summary="Health")
    async def health() -> dict:
        """ok, with the run, its gate and the queue (no key needed: for load balancers)."""
        return service().health()

    return app
