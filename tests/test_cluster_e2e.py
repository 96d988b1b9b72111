"""Cluster end to end (opt-in): the same scenario on a real cluster (kind, k3s or real).

Runs when KUBECONFIG is set and PNAS_E2E_MANIFEST names a PnasEval manifest that can run there
(images pushed, the operator installed with the chart, the dataset and the credentials Secret in
place). It applies the manifest, waits for the PnasEval to finish and checks its status; what only
a real cluster shows: scheduling on device-plugin resources, the Job controller's own counters,
garbage collection of the Jobs when the PnasEval is deleted, and the API server's validation.
"""

from __future__ import annotations

import os
import time

import pytest
import yaml

pytestmark = pytest.mark.cluster

KUBECONFIG = os.environ.get("KUBECONFIG")
MANIFEST = os.environ.get("PNAS_E2E_MANIFEST")


@pytest.fixture(scope="module")
def api():
    if not KUBECONFIG:
        pytest.skip("no cluster: set KUBECONFIG (and PNAS_E2E_MANIFEST) to run the cluster end-to-end test")
    if not MANIFEST:
        pytest.skip("KUBECONFIG is set but PNAS_E2E_MANIFEST (a PnasEval manifest for that cluster) is not")
    import kubernetes

    kubernetes.config.load_kube_config()
    return kubernetes.client


def test_a_pnaseval_runs_to_success_on_a_real_cluster(api):
    body = yaml.safe_load(open(MANIFEST))
    namespace = body["metadata"].get("namespace", "default")
    name = body["metadata"]["name"]
    custom = api.CustomObjectsApi()
    custom.create_namespaced_custom_object("pnaseval.io", "v1alpha1", namespace, "pnasevals", body)
    try:
        deadline = time.monotonic() + float(os.environ.get("PNAS_E2E_TIMEOUT", "3600"))
        while time.monotonic() < deadline:
            status = custom.get_namespaced_custom_object("pnaseval.io", "v1alpha1", namespace, "pnasevals", name).get(
                "status", {}
            )
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            time.sleep(10)
        assert status.get("phase") == "Succeeded", status
        assert status["results"] and all(r["images"] > 0 and r["throughput"] > 0 for r in status["results"])
    finally:
        custom.delete_namespaced_custom_object("pnaseval.io", "v1alpha1", namespace, "pnasevals", name)
    deadline = time.monotonic() + 120
    selector = f"pnaseval.io/name={name}"
    while (
        api.BatchV1Api().list_namespaced_job(namespace, label_selector=selector).items and time.monotonic() < deadline
    ):
        time.sleep(2)
    assert not api.BatchV1Api().list_namespaced_job(namespace, label_selector=selector).items  # garbage collected
