"""python -m zoidberg serve: a finished run behind HTTP (FastAPI and uvicorn), or on Ray Serve with replicas."""

from __future__ import annotations

import os

from zoidberg.cli.options import CliError, add_runs_dir

# Where a key comes from when --api-key is not given (a key on the command line shows in the process list).
API_KEY_VARIABLE = "ZOIDBERG_API_KEY"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_parsers(commands) -> None:
    """Adds serve."""
    serve = commands.add_parser(
        "serve", help="Serve a run's predictions over HTTP (POST /v1/predict).",
        description="Serve a finished run over HTTP: POST /v1/predict takes PNG, JPEG or DICOM bytes and answers the "
        "prediction record (README: \"The prediction record\"), ?gradcam=1 adds the Grad-CAM; GET /v1/model is the model "
        "card, GET /healthz the health, /docs the OpenAPI docs. Concurrent requests share forward passes. Research and "
        "teaching only, not a medical device.",
    )
    serve.add_argument("--run", required=True, help="Run id (a cross-validation, ensemble or adapted run).")
    serve.add_argument("--host", default="127.0.0.1", help="Address to listen on [default: 127.0.0.1, this machine only].")
    serve.add_argument("--port", type=int, default=8000, help="Port [default: 8000].")
    key = serve.add_mutually_exclusive_group()
    key.add_argument("--api-key-file", default=None, metavar="FILE", help="Require the key written in FILE (its first line) of every "
                     f"request but /healthz; or set ${API_KEY_VARIABLE} [default: none].")
    key.add_argument("--api-key", default=None, help="The key itself: every user of this machine sees it in the process list "
                     f"(`ps`), so the command warns; prefer --api-key-file or ${API_KEY_VARIABLE}.")
    serve.add_argument("--max-body-mb", type=float, default=32.0, help="Refuse uploads above this size, before reading them [default: 32].")
    serve.add_argument("--max-batch", type=int, default=16, help="The most images in one forward pass [default: 16].")
    serve.add_argument("--max-wait-ms", type=float, default=4.0, help="How long a request waits for others to share its pass [default: 4].")
    serve.add_argument("--max-queue", type=int, default=64, help="The most images waiting; more get 503 with Retry-After [default: 64].")
    serve.add_argument("--access-log", default=None, metavar="FILE", help="Append one JSON line per request (time, path, status, "
                       "latency, sizes, refusal reason; never a file name, a query or a patient's data) to FILE, rotated at 10 MB "
                       "(5 kept) [default: stderr].")
    serve.add_argument("--records-log", default=None, metavar="FILE", help="Append every prediction record to FILE (JSON lines, "
                       "rotated at 50 MB; no file names, no pixels) for `monitor` to watch [default: none].")
    serve.add_argument("--ray", action="store_true", help="Run the same app on Ray Serve (pip install -r requirements-ray.txt).")
    serve.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas, each with the run loaded [default: 1].")
    serve.add_argument("--ray-address", default=None, help="A Ray cluster to join [default: a private local Ray].")
    add_runs_dir(serve)
    serve.set_defaults(handler=command_serve)


def settings_from_args(args):
    """The ServiceSettings of the command line (a ValueError names the option to change)."""
    from zoidberg.serving.service import ServiceSettings

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535 (got {args.port}).")
    if args.replicas < 1:
        raise ValueError(f"--replicas must be at least 1 (got {args.replicas}).")
    return ServiceSettings(
        run_id=args.run, runs_dir=getattr(args, "runs_dir", None), api_key=api_key_from(args),
        max_body_bytes=int(args.max_body_mb * 1024**2), max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
        records_log=getattr(args, "records_log", None),
    )


def api_key_from(args) -> str | None:
    """The service's key: from --api-key-file, --api-key (warned: it shows in `ps`), or $ZOIDBERG_API_KEY; None for none.

    Raises:
        ValueError: The key file cannot be read or is empty.
    """
    import sys

    if getattr(args, "api_key_file", None):
        try:
            lines = open(args.api_key_file, encoding="utf-8").read().splitlines()
        except OSError as error:
            raise ValueError(f"Cannot read the key file {args.api_key_file}: {error.strerror or error}.") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise ValueError(f"The key file {args.api_key_file} is empty: write the key on its first line.")
        return key
    if args.api_key:
        print(f"Warning: a key given with --api-key is visible to every user of this machine (`ps`); use --api-key-file FILE or "
              f"${API_KEY_VARIABLE} instead.", file=sys.stderr)
        return args.api_key
    return os.environ.get(API_KEY_VARIABLE) or None


def check_port_free(host: str, port: int) -> None:
    """Refuses, in one sentence, an address this machine cannot listen on (before the run is loaded)."""
    import errno
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        reason = "is in use by another program" if error.errno == errno.EADDRINUSE else f"cannot be listened on ({error.strerror or error})"
        raise CliError(f"Port {port} on {host} {reason}: choose another with --port, or stop what holds it.") from None


def command_serve(args) -> int:
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        raise CliError(str(error)) from None
    check_port_free(args.host, args.port)
    from zoidberg.serving.access_log import configure_access_log

    try:
        configure_access_log(getattr(args, "access_log", None))
    except ValueError as error:
        raise CliError(str(error)) from None
    if args.host not in LOCAL_HOSTS and not settings.api_key:
        print(f"Warning: serving on {args.host} without an API key: anyone who reaches this port can use the model "
              f"(--api-key or ${API_KEY_VARIABLE}).")
    if args.ray:
        from zoidberg.serving.ray_serve import serve_on_ray

        return serve_on_ray(settings, host=args.host, port=args.port, replicas=args.replicas, address=args.ray_address)
    import uvicorn

    from zoidberg.serving.app import build_app
    from zoidberg.serving.service import PredictionService

    service = PredictionService(settings)  # Loaded before listening: a bad run id fails here, in one sentence.
    app = build_app(lambda: service, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)
    print(f"Serving run {service.run_id} at http://{args.host}:{args.port}/v1/predict (docs: /docs; Ctrl+C stops).")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
