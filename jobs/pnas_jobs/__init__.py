"""pnas-eval stages, planner and local runner. Never imports kopf or the Kubernetes client."""

__version__ = "0.1.0"
