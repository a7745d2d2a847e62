"""values.schema.json rejects a wrong value before anything reaches the cluster.

Helm 3 and Helm 4 word schema errors differently (`- camera.accessMode: ...` vs
`- at '/camera/accessMode': ...`), so each case asserts that the error names the field, in either
spelling, and that the failure is a schema failure.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from facepipe_dev import helm as h

EDGE_OK = ("cloud.host=mqtt.example.com",)

# (chart, --set values, the field the error must name)
CASES = [
    ("face-edge", ("cloud.host=not a host!",), "cloud.host"),
    ("face-edge", ("cloud.port=70000",), "cloud.port"),
    ("face-edge", ("cloud.port=0",), "cloud.port"),
    ("face-edge", ("cloud.qos=2",), "cloud.qos"),
    ("face-edge", ("cloud.topic=cam/#",), "cloud.topic"),
    ("face-edge", ("cloud.tls.enabled=yes",), "cloud.tls.enabled"),
    ("face-edge", ("cloud.tls.ca.pem=not-a-certificate",), "cloud.tls.ca.pem"),
    ("face-edge", ("cloud.auth.existingSecret=Not_A_Name",), "cloud.auth.existingSecret"),
    ("face-edge", ("deviceId=bad/device",), "deviceId"),
    ("face-edge", ("deviceId=-leading-dash",), "deviceId"),
    ("face-edge", ("deviceId=unknown",), "deviceId"),  # reserved: where the cloud stores faces no topic proves
    ("face-edge", ("camera.accessMode=root",), "camera.accessMode"),
    ("face-edge", ("camera.device=video0",), "camera.device"),
    ("face-edge", ("camera.source=ftp://cam/stream",), "camera.source"),
    ("face-edge", ("camera.source=rtsp://viewer:pw@cam.lan/stream",), "camera.source"),  # credentials: sourceCredentials
    ("face-edge", ("camera.sourceCredentials.existingSecret=Not_A_Name",), "camera.sourceCredentials.existingSecret"),
    ("face-edge", ("camera.detector.name=mtcnn",), "camera.detector.name"),
    ("face-edge", ("camera.detector.scoreThreshold=1.5",), "camera.detector.scoreThreshold"),
    ("face-edge", ("camera.publish.imageFormat=gif",), "camera.publish.imageFormat"),
    ("face-edge", ("camera.publish.jpegQuality=0",), "camera.publish.jpegQuality"),
    ("face-edge", ("camera.publish.cropMargin=1.5",), "camera.publish.cropMargin"),  # the processor would refuse the crops
    ("face-edge", ("camera.videoGroupId=-1",), "camera.videoGroupId"),
    ("face-edge", ("camera.devicePlugin.resourceName=not a resource",), "camera.devicePlugin.resourceName"),
    ("face-edge", ("broker.maxPacketSize=0",), "broker.maxPacketSize"),
    ("face-edge", ("broker.maxQueuedMessages=0",), "broker.maxQueuedMessages"),
    ("face-edge", ("broker.image.tag=",), "broker.image.tag"),
    ("face-edge", ("forwarder.spool.type=nfs",), "forwarder.spool.type"),
    ("face-edge", ("forwarder.spool.size=lots",), "forwarder.spool.size"),
    ("face-edge", ("forwarder.spool.maxBytes=-1",), "forwarder.spool.maxBytes"),
    ("face-edge", ("forwarder.spool.maxAgeSeconds=-60",), "forwarder.spool.maxAgeSeconds"),
    ("face-edge", ("camera.publish.policy=sometimes",), "camera.publish.policy"),
    ("face-edge", ("camera.publish.trackRepublishSeconds=-1",), "camera.publish.trackRepublishSeconds"),
    ("face-edge", ("camera.motionGate.enabled=sometimes",), "camera.motionGate.enabled"),
    ("face-edge", ("camera.motionGate.threshold=2",), "camera.motionGate.threshold"),
    ("face-edge", ("camera.motionGate.maxSkipSeconds=0",), "camera.motionGate.maxSkipSeconds"),
    ("face-edge", ("camera.stableFaces.maxFps=0.5",), "camera.stableFaces.maxFps"),
    ("face-edge", ("camera.stableFaces.afterSeconds=-1",), "camera.stableFaces.afterSeconds"),
    ("face-edge", ("image.pullPolicy=Sometimes",), "image.pullPolicy"),
    ("face-edge", ("image.digest=md5:abc",), "image.digest"),
    ("face-edge", ("logLevel=verbose",), "logLevel"),
    ("face-edge", ("httpPort=0",), "httpPort"),
    ("face-edge", ("camera.resources.limits.memory=lots",), "camera.resources.limits.memory"),
    ("face-edge", ("unknownTopLevel=1",), "unknownTopLevel"),
    ("face-edge", ("camera.colour=red",), "camera.colour"),
    ("face-edge", ("statusIntervalSeconds=-1",), "statusIntervalSeconds"),
    ("face-edge", ("metrics.podMonitor.interval=soon",), "metrics.podMonitor.interval"),
    ("face-edge", ("metrics.serviceMonitor.scrapeTimeout=5",), "metrics.serviceMonitor.scrapeTimeout"),
    ("face-edge", ("metrics.prometheusRule.enabled=maybe",), "metrics.prometheusRule.enabled"),
    ("face-cloud", ("metrics.grafanaDashboard.namespace=Not_A_Namespace",), "metrics.grafanaDashboard.namespace"),
    ("face-cloud", ("metrics.grafanaDashboard.label=bad label",), "metrics.grafanaDashboard.label"),
    ("face-cloud", ("metrics.serviceMonitor.scrapeInterval=30s",), "metrics.serviceMonitor.scrapeInterval"),
    ("face-edge", ("argocd.syncWaves.enabled=sometimes",), "argocd.syncWaves.enabled"),
    ("face-cloud", ("argocd.syncWaves.wave=3",), "argocd.syncWaves.wave"),
    ("face-cloud", ("processor.store.type=ftp",), "processor.store.type"),
    ("face-cloud", ("processor.store.directory.sync=never",), "processor.store.directory.sync"),
    ("face-cloud", ("processor.store.s3.sse=AES128",), "processor.store.s3.sse"),
    ("face-cloud", ("processor.store.s3.bucket=Bad_Bucket",), "processor.store.s3.bucket"),
    ("face-cloud", ("processor.store.s3.endpoint=s3.example.com",), "processor.store.s3.endpoint"),
    ("face-cloud", ("processor.replicaCount=0",), "processor.replicaCount"),
    ("face-cloud", ("processor.retentionDays=-1",), "processor.retentionDays"),
    ("face-cloud", ("processor.qos=2",), "processor.qos"),
    ("face-cloud", ("processor.shareGroup=a/b",), "processor.shareGroup"),
    ("face-cloud", ("broker.service.type=ClusterIP",), "broker.service.type"),
    ("face-cloud", ("broker.service.nodePorts.mqtts=80",), "broker.service.nodePorts.mqtts"),
    ("face-cloud", ("broker.tls.minVersion=tlsv1.0",), "broker.tls.minVersion"),
    ("face-cloud", ("broker.tls.hosts[0]=bad host",), "broker.tls.hosts"),
    ("face-cloud", ("broker.auth.devices[0].name=dev/1", "broker.auth.devices[0].password=long-enough-1"), "broker.auth.devices"),
    ("face-cloud", ("broker.auth.devices[0].name=dev-1", "broker.auth.devices[0].password=short"), "broker.auth.devices"),
    ("face-cloud", ("broker.auth.allowAnonymous=maybe",), "broker.auth.allowAnonymous"),
    ("face-cloud", ("broker.maxPacketSize=0",), "broker.maxPacketSize"),
    ("face-cloud", ("topic=cam_bin_remote/+",), "topic"),
    ("face-cloud", ("processor.autoscaling.targetCPUUtilizationPercentage=150",), "processor.autoscaling.targetCPUUtilizationPercentage"),
]


def _names_field(stderr: str, field: str) -> bool:
    """Does a schema error name `field`? Helm 3: `- a.b.c: ...` (arrays `a.b.0.c`), or
    `- a: Additional property c is not allowed`; Helm 4: `at '/a/b/c'`, or
    `at '/a': additional properties 'c' not allowed`."""
    dotted, slashed = re.escape(field), re.escape(field.replace(".", "/"))
    parent, _, leaf = field.rpartition(".")
    owner = re.escape(parent) if parent else r"\(root\)"
    patterns = [
        rf"^\s*- {dotted}[.:]",
        rf"at '/{slashed}[/']",
        rf"^\s*- {owner}: Additional property {re.escape(leaf)} is not allowed",
        rf"additional propert(y|ies) '{re.escape(leaf)}'",
    ]
    return any(re.search(p, stderr, flags=re.MULTILINE) for p in patterns)


def _template(helm: h.Helm, chart: str, sets: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    base = EDGE_OK if chart == "face-edge" else ()
    return helm.template_text(chart, sets=[*base, *sets], check=False)


def _key(item: str) -> str:
    """The value a --set item writes: `a.b[0].c=x` -> `a.b`."""
    return item.split("=", 1)[0].split("[", 1)[0]


def _batches(cases: list[tuple[str, tuple[str, ...], str]]) -> list[tuple[str, tuple[str, ...]]]:
    """Group the rejection cases into few helm runs: cases of one chart that set different values
    go into one run (a schema failure lists every bad field, so each case is still checked)."""
    batches: list[tuple[str, list[str], set[str]]] = []
    for chart, sets, _ in cases:
        keys = {_key(item) for item in sets}
        for b_chart, b_sets, b_keys in batches:
            if b_chart == chart and not keys & b_keys:
                b_sets.extend(sets)
                b_keys.update(keys)
                break
        else:
            batches.append((chart, list(sets), set(keys)))
    return [(chart, tuple(sets)) for chart, sets, _ in batches]


@pytest.fixture(scope="session")
def outcomes(helm: h.Helm) -> dict[tuple[str, tuple[str, ...]], subprocess.CompletedProcess[str]]:
    """The result that answers each case: rejection cases in batches, contradictions one by one
    (a template stops at its first failure); run once per helm, in parallel."""
    batches = _batches(CASES)
    runs = batches + [(chart, sets) for chart, sets, _ in CONTRADICTIONS]
    results = dict(zip(runs, h.parallel(lambda r: _template(helm, *r), runs), strict=True))
    answer = {(chart, sets): results[(chart, sets)] for chart, sets, _ in CONTRADICTIONS}
    for chart, sets, _ in CASES:
        batch = next(b for b in batches if b[0] == chart and set(sets) <= set(b[1]))
        answer[(chart, sets)] = results[batch]
    return answer


def test_batches_keep_every_case() -> None:
    batches = _batches(CASES)
    assert len(batches) < len(CASES) / 4
    for chart, sets, _ in CASES:
        assert sum(1 for b in batches if b[0] == chart and set(sets) <= set(b[1])) == 1


@pytest.mark.parametrize(("chart", "sets", "field"), CASES, ids=[f"{c}:{s[0]}" for c, s, _ in CASES])
def test_schema_rejects(helm: h.Helm, outcomes: dict, chart: str, sets: tuple[str, ...], field: str) -> None:
    result = outcomes[(chart, sets)]
    assert result.returncode != 0, f"accepted: {sets}"
    # The field is named as failing (not just mentioned by another case's message in the batch).
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert _names_field(result.stderr, field), result.stderr


# Values the schema allows but that contradict each other: the templates fail with a message that
# says what to set.
CONTRADICTIONS = [
    ("face-edge", ("cloud.auth.existingSecret=uplink", "cloud.auth.password=pw"), "cloud.auth.existingSecret or cloud.auth.password"),
    ("face-edge", ("broker.auth.enabled=true",), "broker.auth.existingSecret or broker.auth.password"),
    ("face-edge", ("forwarder.spool.size=1Gi", "forwarder.spool.maxBytes=1073741824"), "forwarder.spool.maxBytes (1073741824) must stay"),
    ("face-edge", ("forwarder.spool.size=8Mi",), "forwarder.spool.size (8Mi) is too small"),
    ("face-cloud", ("processor.store.type=s3",), "processor.store.s3.bucket"),
    ("face-cloud", ("broker.tls.enabled=false",), "broker.service.exposePlain"),
    ("face-cloud", ("broker.auth.devices[0].name=processor", "broker.auth.devices[0].password=long-enough-1"), "processor, probe or gallery user"),
    ("face-cloud", ("broker.auth.devices[0].name=unknown", "broker.auth.devices[0].password=long-enough-1"), "reserved"),
    ("face-cloud", ("processor.store.s3.kmsKeyId=k", "processor.store.s3.sse=none"), "sse=aws:kms"),
    ("face-cloud", ("broker.tls.useIdentityAsUsername=true",), "useIdentityAsUsername needs broker.tls.requireClientCertificate"),
    # The review's cloud-s3-compatible example: RGW refuses SSE over plain http, so no face would ever be stored.
    (
        "face-cloud",
        ("processor.store.type=s3", "processor.store.s3.bucket=faces", "processor.store.s3.endpoint=http://rgw:7480"),
        "processor.store.s3.sse=AES256 over the plain-http endpoint http://rgw:7480",
    ),
    ("face-edge", (r"commonAnnotations.argocd\.argoproj\.io/sync-wave=late",), "commonAnnotations sets argocd.argoproj.io/sync-wave"),
    ("face-cloud", (r"commonAnnotations.argocd\.argoproj\.io/sync-wave=late",), "argocd.syncWaves.enabled=false"),
]


@pytest.mark.parametrize(("chart", "sets", "message"), CONTRADICTIONS, ids=[f"{c}:{s[0]}" for c, s, _ in CONTRADICTIONS])
def test_templates_refuse_contradictions(helm: h.Helm, outcomes: dict, chart: str, sets: tuple[str, ...], message: str) -> None:
    result = outcomes[(chart, sets)]
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_schema_is_draft07_and_closed(chart: str) -> None:
    import json

    import jsonschema
    import yaml

    schema = json.loads((h.chart_dir(chart) / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((h.chart_dir(chart) / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)
    # Every values.yaml key is described by the schema (nothing accepted by accident).
    for key in h.leaf_keys(values):
        node = schema
        for part in key.split("."):
            if node.get("type") == "object" and "properties" in node and part in node["properties"]:
                node = node["properties"][part]
            else:
                break
        else:
            continue
        assert node.get("additionalProperties") is not False or part in node.get("properties", {}), key
