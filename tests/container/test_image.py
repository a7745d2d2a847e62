"""The application image: it builds from apps/Dockerfile, runs `facepipe` as uid 10001, carries
the verified models, and stays under its size goal."""

from __future__ import annotations

import json

import pytest

from facepipe import __version__
from facepipe_dev import podman as support

pytestmark = pytest.mark.container

SIZE_GOAL_MB = 400
LOCKED_DOWN = ["--read-only", "--tmpfs", "/tmp:rw,mode=1777", "--user", f"{support.APP_UID}:{support.APP_UID}", "--cap-drop", "ALL"]


def test_version(podman: support.Podman, app_image: str) -> None:
    result = support.run_once(podman, app_image, ["--version"], {}, LOCKED_DOWN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"facepipe {__version__}"


def test_image_configuration(podman: support.Podman, app_image: str, container_report: list[str]) -> None:
    config = json.loads(podman.run("image", "inspect", app_image).stdout)[0]["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["Entrypoint"] == ["facepipe"]
    assert config["User"] == f"{support.APP_UID}:{support.APP_UID}"
    assert env["FACEPIPE_MODEL_DIR"] == "/opt/facepipe/models"
    assert env["PATH"].startswith("/opt/facepipe/venv/bin:")
    labels = config.get("Labels") or {}
    for key in ("title", "source", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{key}" in labels
    size_mb = podman.image_size(app_image) / 1e6
    container_report.append(f"app image size {size_mb:.0f} MB (goal < {SIZE_GOAL_MB} MB)")
    assert size_mb < SIZE_GOAL_MB


def test_runs_as_non_root_without_a_writable_root(podman: support.Podman, app_image: str) -> None:
    """The image's own user is 10001 (no --user given), the root filesystem can be read-only,
    and the processor's default directory store is writable by that user."""
    script = (
        "import os, pathlib; print(os.getuid(), os.getgid());"
        "p = pathlib.Path('/var/lib/facepipe/faces'); print(os.access(p, os.W_OK));"
        "print(os.access('/opt/facepipe', os.W_OK))"
    )
    result = support.run_once(podman, app_image, ["-c", script], {}, ["--entrypoint", "python3"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(support.APP_UID), str(support.APP_UID), "True", "False"]
    result = support.run_once(
        podman,
        app_image,
        ["-c", "import cv2, numpy, boto3, paho.mqtt, prometheus_client; print(cv2.__version__)"],
        {},
        [*LOCKED_DOWN, "--entrypoint", "python3"],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("4."), "the image must carry OpenCV 4 (5 has no CascadeClassifier)"


def test_run_command_reaches_the_devkit(podman: support.Podman, app_image: str) -> None:
    """`facepipe run` lives in the devkit (facepipe_dev), which ships in the image: the command gets as far as
    starting its brokers and, the image having no Mosquitto, says so (exit 2, no traceback)."""
    result = support.run_once(podman, app_image, ["run", "--source", "/tmp/none.mp4"], {}, LOCKED_DOWN)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'mosquitto' not found" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_models_are_baked_in_and_verified(podman: support.Podman, app_image: str) -> None:
    """Every model of the manifest is in FACEPIPE_MODEL_DIR and passes the camera's checksum check;
    both detectors load them."""
    script = (
        "import json, os, pathlib; from facepipe import models;"
        "d = pathlib.Path(os.environ['FACEPIPE_MODEL_DIR']);"
        "names = sorted(models.load_manifest(d / models.MANIFEST_NAME));"
        "[models.resolve(n, d) for n in names];"
        "from facepipe.camera.detect import create_detector; from facepipe.config import DetectorSettings;"
        "[create_detector(DetectorSettings(detector=k, model_dir=str(d))) for k in ('yunet', 'haar')];"
        "print(json.dumps(names))"
    )
    result = support.run_once(podman, app_image, ["-c", script], {}, [*LOCKED_DOWN, "--entrypoint", "python3"])
    assert result.returncode == 0, result.stderr
    manifest = json.loads((support.REPO / "models" / "manifest.json").read_text())
    assert json.loads(result.stdout) == sorted(m["name"] for m in manifest["models"])


def test_no_build_tools_in_the_final_image(podman: support.Podman, app_image: str) -> None:
    result = support.run_once(
        podman, app_image, ["-c", "for t in gcc cc make pip pip3 apt-get; do command -v $t || true; done"], {}, ["--entrypoint", "sh"]
    )
    assert result.returncode == 0, result.stderr
    found = result.stdout.split()
    assert found in ([], ["/usr/bin/apt-get"]), f"unexpected tools in the final image: {found}"
