"""Scenario 6: face-cloud syncs from argocd/values/cloud.yaml into the cloud's own cluster, and the
broker address the devices are given (edge-common.yaml's cloud.host and cloud.port) is served there."""

from __future__ import annotations

import pytest
import yaml

from facepipe_dev import gitops as f

pytestmark = [pytest.mark.argocd]


def cloud_values(fleet: f.Fleet, name: str) -> dict:
    return yaml.safe_load((fleet.checkout.path / "argocd" / "values" / name).read_text())


def test_face_cloud_runs_with_the_values_of_cloud_yaml(bootstrapped: f.Fleet) -> None:
    fleet = bootstrapped
    values = cloud_values(fleet, "cloud.yaml")
    cloud = fleet.cloud
    deployments = f.deployments(cloud)
    assert f.rolled_out(deployments["face-cloud-broker"])
    statefulsets = f.objects(cloud, f"/apis/apps/v1/namespaces/{f.FACEPIPE_NS}/statefulsets")
    processor = statefulsets["face-cloud-processor"]
    assert processor["status"].get("readyReplicas") == values["processor"]["replicaCount"]
    secrets = {
        v["name"]: (v.get("secret") or {}).get("secretName")
        for v in deployments["face-cloud-broker"]["spec"]["template"]["spec"]["volumes"]
    }
    assert values["broker"]["auth"]["existingSecret"] in secrets.values()
    assert values["broker"]["tls"]["existingSecret"] in secrets.values()
    claims = f.objects(cloud, f"/api/v1/namespaces/{f.FACEPIPE_NS}/persistentvolumeclaims")
    faces = claims["face-cloud-processor-faces"]
    assert faces["status"]["phase"] == "Bound"
    assert faces["spec"]["storageClassName"] == values["processor"]["store"]["directory"]["persistence"]["storageClass"]
    assert faces["spec"]["resources"]["requests"]["storage"] == values["processor"]["store"]["directory"]["persistence"]["size"]
    assert not [d for d in deployments if d.startswith("face-edge")], "an edge component on the cloud"


def test_the_broker_service_the_devices_are_pointed_at_exists(bootstrapped: f.Fleet) -> None:
    fleet = bootstrapped
    edge = cloud_values(fleet, "edge-common.yaml")["cloud"]
    services = f.objects(fleet.cloud, f"/api/v1/namespaces/{f.FACEPIPE_NS}/services")
    external = services["face-cloud-broker-external"]
    assert external["spec"]["type"] == cloud_values(fleet, "cloud.yaml")["broker"]["service"]["type"] == "LoadBalancer"
    assert edge["port"] in [p["port"] for p in external["spec"]["ports"] if p["name"] == "mqtts"]
    assert edge["tls"]["enabled"] is True
    assert external["status"]["loadBalancer"]["ingress"], "no address for the name in cloud.host to point at"
    app = fleet.argocd.get("applications", "face-cloud")
    assert app["spec"]["sources"][0]["helm"]["valueFiles"] == ["$values/argocd/values/cloud.yaml"]
    assert ("Service", "face-cloud-broker-external") in {(r["kind"], r["name"]) for r in app["status"]["resources"]}
