"""The charts' commands run inside the image.

For every container of the application image that `helm template` renders, in every profile of
both charts (tests/values/ plus the defaults), run its command and args with `--check-config`
inside the image: with the env the chart renders (secretKeyRef / fieldRef as placeholders), the
user, groups, read-only root filesystem and dropped capabilities of its securityContext, and a
writable tmpfs where the pod mounts a volume (/tmp is an emptyDir). It must exit 0 and show the
rendered values in the effective configuration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from facepipe_dev import helm as h
from facepipe_dev import podman as support

pytestmark = pytest.mark.container

APP_REPOSITORY = "facepipe/facepipe"
CASES = [(chart, profile) for chart in h.CHART_NAMES for profile in h.profile_ids(chart)]


@pytest.fixture(scope="module")
def one_helm(helm_binaries: Mapping[str, h.Helm | None]) -> h.Helm:
    """One helm is enough here (the charts tier compares helm 3 and 4): helm 4, else helm 3."""
    binary = helm_binaries.get("helm4") or helm_binaries.get("helm3")
    if binary is None:
        pytest.skip(f"helm not found: {h.INSTALL_HINT}")
    return binary


def app_containers(docs: list[dict[str, Any]]) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    """(where, pod spec, container) of every container that runs the application image."""
    found = []
    for doc in h.workloads(docs):
        for c in h.containers(doc):
            if APP_REPOSITORY in c["image"]:
                found.append((f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}", h.pod_spec(doc), c))
    return found


def check_in_image(podman: support.Podman, image: str, pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    """Problems found running the container's command with --check-config in the image."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    env = h.env_map(container, placeholder="from-a-secret")
    options = [*support.security_options(pod, container), *support.volume_options(container)]
    if command != ["facepipe"]:
        # A helper the chart runs from the same image (e.g. the spool's chown init container): it
        # must exist in the image and succeed under its securityContext.
        if not command:
            return ["no command: the image's entrypoint would run with the chart's args"]
        result = support.run_once(podman, image, [*command[1:], *args], env, [*options, "--entrypoint", command[0]])
        if result.returncode != 0:
            return [f"{' '.join(command + args)} exited {result.returncode} with {' '.join(options)}:\n{result.stderr}{result.stdout}"]
        return []
    if "/tmp" not in {m["mountPath"] for m in container.get("volumeMounts", [])}:
        return ["no /tmp volume: a read-only root filesystem leaves the app nowhere to write temporary files"]
    result = support.run_once(podman, image, [*args, "--check-config"], env, options)
    if result.returncode != 0:
        return [
            f"facepipe {' '.join(args)} --check-config exited {result.returncode} with {' '.join(options)}:\n{result.stderr}{result.stdout}"
        ]
    report = json.loads(result.stdout)
    problems = []
    if report.get("valid") is not True or report.get("component") != args[0]:
        problems.append(f"unexpected report header: {report.get('component')!r} valid={report.get('valid')!r}")
    effective = report["config"]
    problems += h.check_config_problems(container, effective, reader="the app in the image")
    if args[0] == "camera" and "FACEPIPE_MODEL_DIR" not in env:
        if effective.get("FACEPIPE_MODEL_DIR") != "/opt/facepipe/models":
            problems.append(f"the camera's model dir is {effective.get('FACEPIPE_MODEL_DIR')!r}, not the image's /opt/facepipe/models")
    return problems


@pytest.mark.parametrize(("chart", "profile"), CASES, ids=[f"{c}:{p}" for c, p in CASES])
def test_rendered_commands_run_in_the_image(
    one_helm: h.Helm, render_cache: h.RenderCache, podman: support.Podman, app_image: str, chart: str, profile: str
) -> None:
    containers = app_containers(render_cache.get(one_helm, chart, profile))
    assert containers, f"{chart}:{profile} renders no container of the application image"
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda item: check_in_image(podman, app_image, item[1], item[2]), containers))
    problems = [f"{where}: {p}" for (where, _, _), found in zip(containers, results, strict=True) for p in found]
    assert not problems, "\n".join(problems)


def test_every_component_is_covered(one_helm: h.Helm, render_cache: h.RenderCache) -> None:
    seen = {
        c["args"][0]
        for chart, profile in CASES
        for _, _, c in app_containers(render_cache.get(one_helm, chart, profile))
        if c.get("command") == ["facepipe"]
    }
    assert seen == {"camera", "logger", "forwarder", "processor", "probe", "gallery"}
