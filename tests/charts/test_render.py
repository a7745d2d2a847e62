"""helm lint --strict, helm template of the defaults and of every tests/values profile, and a
strict Kubernetes schema check + typed parse of every rendered object, on Helm 3 and Helm 4."""

from __future__ import annotations

import pytest
import yaml

from facepipe_dev import helm as h

CASES = [(chart, profile) for chart in h.CHART_NAMES for profile in h.profile_ids(chart)]
CASE_IDS = [f"{chart}:{profile}" for chart, profile in CASES]


def test_every_chart_has_profiles() -> None:
    assert len(h.profiles("face-edge")) >= 4, "edge profiles: video devices, RTSP, each access mode"
    assert len(h.profiles("face-cloud")) >= 2, "cloud profiles: S3 and PVC storage"
    modes = {yaml.safe_load(p.read_text()).get("camera", {}).get("accessMode") for p in h.profiles("face-edge")}
    assert {"privileged", "hostDevice", "devicePlugin"} <= modes
    stores = {yaml.safe_load(p.read_text())["processor"]["store"]["type"] for p in h.profiles("face-cloud")}
    assert stores == {"s3", "directory"}


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_lint_strict(helm: h.Helm, chart: str) -> None:
    """helm lint --strict of each chart with its defaults (face-edge: plus the required cloud.host);
    the profiles are rendered and checked object by object below."""
    result = helm.lint(chart, sets=h.DEFAULT_SETS[chart])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_edge_defaults_need_cloud_host(helm: h.Helm) -> None:
    """Without cloud.host the install fails, and the message says what to set."""
    result = helm.template_text("face-edge", check=False)
    assert result.returncode != 0
    assert "cloud.host is required" in result.stderr
    assert "--set cloud.host=" in result.stderr


def test_cloud_defaults_need_nothing(helm: h.Helm, render_cache: h.RenderCache) -> None:
    assert render_cache.get(helm, "face-cloud", "default")


@pytest.mark.parametrize(("chart", "profile"), CASES, ids=CASE_IDS)
def test_objects_validate_strictly_and_parse(helm: h.Helm, render_cache: h.RenderCache, chart: str, profile: str) -> None:
    docs = render_cache.get(helm, chart, profile)
    assert docs, "nothing rendered"
    errors = [e for d in docs if (e := h.validate_strict(d))]
    assert not errors, "\n".join(errors)
    for doc in (d for d in docs if not h.is_operator_object(d)):
        obj = h.typed(doc)
        assert obj.metadata.name == doc["metadata"]["name"]
        assert obj.kind == doc["kind"]


@pytest.mark.parametrize(("chart", "profile"), CASES, ids=CASE_IDS)
def test_names_labels_and_namespace(helm: h.Helm, render_cache: h.RenderCache, chart: str, profile: str) -> None:
    docs = render_cache.get(helm, chart, profile)
    seen = set()
    for doc in docs:
        meta = doc["metadata"]
        key = (doc["kind"], meta["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
        assert meta["namespace"] == h.NAMESPACE, key
        assert len(meta["name"]) <= 63, key
        labels = meta["labels"]
        for label in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert label in labels, (key, label)
        assert labels["app.kubernetes.io/name"] == chart
        assert labels["app.kubernetes.io/instance"] == h.RELEASE


def test_strict_validation_catches_unknown_fields() -> None:
    """The validator really is strict (a typo in a template would not slip through)."""
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80, "targetPrt": 80}]},
    }
    assert h.validate_strict(bad) is not None


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_every_value_is_documented(chart: str) -> None:
    """Each key of values.yaml has a `## @param` (itself or an ancestor), and each @param exists."""
    values = yaml.safe_load((h.chart_dir(chart) / "values.yaml").read_text())
    params = [key for _, key, _ in h.values_params(chart)]
    assert len(params) == len(set(params)), "a @param appears twice"
    for key in params:
        h.lookup(values, key)  # KeyError: a @param for a key that does not exist
    for leaf in h.leaf_keys(values):
        parts = leaf.split(".")
        assert any(".".join(parts[:n]) in params for n in range(1, len(parts) + 1)), f"{leaf} has no ## @param"


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_readme_values_table_is_current(chart: str) -> None:
    readme = (h.chart_dir(chart) / "README.md").read_text()
    assert readme == h.render_readme(chart), f"run: python -m facepipe_dev.helm readme charts/{chart}"


def _comparable(docs: list[dict]) -> list[dict]:
    """Rendered objects without what differs on every render (generated passwords, certificates)."""
    out = []
    for doc in docs:
        doc = yaml.safe_load(yaml.safe_dump(doc))
        if doc["kind"] == "Secret":
            doc["data"] = sorted(doc.get("data", {}))
        template = doc.get("spec", {}).get("template", {}).get("metadata", {})
        for key in list(template.get("annotations", {})):
            if key.startswith("checksum/"):
                template["annotations"][key] = "*"
        out.append(doc)
    return sorted(out, key=lambda d: (d["kind"], d["metadata"]["name"]))


@pytest.mark.parametrize(("chart", "profile"), CASES, ids=CASE_IDS)
def test_helm3_and_helm4_render_the_same(helm_binaries: dict, render_cache: h.RenderCache, chart: str, profile: str) -> None:
    if None in helm_binaries.values():
        pytest.skip(f"needs both helm3 and helm4: {h.INSTALL_HINT}")
    helm3, helm4 = helm_binaries["helm3"], helm_binaries["helm4"]
    assert _comparable(render_cache.get(helm3, chart, profile)) == _comparable(render_cache.get(helm4, chart, profile))
