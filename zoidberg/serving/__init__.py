"""An HTTP prediction service for a finished run: FastAPI, batched scoring, and the same app on Ray Serve."""
