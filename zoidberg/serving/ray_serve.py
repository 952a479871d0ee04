"""The same HTTP app on Ray Serve: one replica per copy of the run, on a private local Ray or a cluster."""

from __future__ import annotations

import dataclasses
import time

from zoidberg.serving.service import ServiceSettings

DEPLOYMENT_NAME = "zoidberg"
# How long serve_on_ray waits for every replica to load its run before giving up.
READY_TIMEOUT_S = 300


class ServiceReplica:
    """One Ray Serve replica: the run loaded once, the app that serve.ingress() asks for built over it."""

    def __init__(self, settings: ServiceSettings):
        from zoidberg.serving.service import PredictionService

        self.settings = settings
        self.service = PredictionService(settings)

    def __serve_build_asgi_app__(self):
        from zoidberg.serving.app import build_app

        return build_app(lambda: self.service, api_key=self.settings.api_key, max_body_bytes=self.settings.max_body_bytes)


def start_ray_service(settings: ServiceSettings, *, host: str, port: int, replicas: int, address: str | None):
    """Starts Ray (or joins `address`), then the app with `replicas` replicas at http://host:port/.

    Returns:
        Whether this call started Ray (and stop_ray_service should shut it down).

    Raises:
        ValueError: Ray Serve is not installed, or Ray cannot start, with what to do.
    """
    try:
        from ray import serve
    except ImportError as error:
        raise ValueError(f"Ray Serve is not installed ({error.name} is missing): pip install -r requirements-ray.txt") from None
    from zoidberg.runs.store import RunStore
    from zoidberg.training.ray_engine import connect

    # A replica's working folder is Ray's: it gets the run store as an absolute path.
    settings = dataclasses.replace(settings, runs_dir=str(RunStore(settings.runs_dir).root.resolve()))
    started = connect(address)
    serve.start(http_options={"host": host, "port": port})
    deployment = serve.deployment(serve.ingress()(ServiceReplica), name=DEPLOYMENT_NAME, num_replicas=replicas,
                                  ray_actor_options={"num_cpus": 0})
    serve.run(deployment.bind(settings), name=DEPLOYMENT_NAME, route_prefix="/", blocking=False)
    return started


def stop_ray_service(started: bool) -> None:
    """Stops the app, and Ray when start_ray_service started it."""
    import ray
    from ray import serve

    serve.shutdown()
    if started:
        ray.shutdown()


def serve_on_ray(settings: ServiceSettings, *, host: str, port: int, replicas: int, address: str | None) -> int:
    """python -m zoidberg serve --ray: runs until Ctrl+C."""
    started = start_ray_service(settings, host=host, port=port, replicas=replicas, address=address)
    print(f"Serving run {settings.run_id} on Ray Serve ({replicas} replica(s)) at http://{host}:{port}/v1/predict "
          "(docs: /docs; Ctrl+C stops).", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop_ray_service(started)
    return 0
