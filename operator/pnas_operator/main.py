"""`pnas-operator`: run the kopf operator with the project's handlers and settings."""

from __future__ import annotations

import argparse
import logging
import os


def main(argv: list[str] | None = None) -> None:
    import kopf

    parser = argparse.ArgumentParser(prog="pnas-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch the whole cluster")
    parser.add_argument(
        "--liveness", default=os.environ.get("PNAS_OPERATOR_LIVENESS"), help="e.g. http://0.0.0.0:8080/healthz"
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    namespaces = args.namespace or [n for n in os.environ.get("PNAS_OPERATOR_NAMESPACE", "").split(",") if n]

    import pnas_operator.handlers  # noqa: F401  registers the handlers

    kopf.configure(verbose=args.verbose)
    # --verbose is for the operator's decisions: the client's debug lines carry whole response bodies
    logging.getLogger("kubernetes.client.rest").setLevel(logging.INFO)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    kopf.run(
        standalone=True,  # one replica (Recreate): no peering objects needed
        clusterwide=args.all_namespaces or not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness,
    )


if __name__ == "__main__":
    main()
