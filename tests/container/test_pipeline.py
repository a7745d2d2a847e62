"""The whole pipeline as containers: an edge and a cloud Mosquitto (a container each), then the
processor, forwarder, logger and camera from the application image, all on the host network on
free loopback ports, locked down as the charts run them (uid 10001, read-only root, tmpfs /tmp,
no capabilities). The camera reads the test video (or, without ../shared, a sample portrait)
from a read-only mount; the processor stores
to a mounted directory at its default FACEPIPE_STORE. Every face the camera published arrives
as a PNG with its metadata, and each component's start-up time (`podman run` until /readyz
answers 200) is measured and printed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from facepipe.contract import FaceMeta
from facepipe.metric_names import PROCESSOR_STORED
from facepipe_dev import podman as support
from facepipe_dev.processes import free_port, port_open, wait_until

pytestmark = pytest.mark.container

DEVICE, CAMERA = "edge-test", "front"
READY_GOAL_SECONDS = 3.0  # the goal, reported; measured ~0.4-0.8 s on a 2-core machine
READY_LIMIT_SECONDS = 10.0  # what fails the test (leaves room for a machine busy with other tiers)


def writable_by_app(path: Path) -> Path:
    """A host directory the container's uid 10001 can write (as a fsGroup'd volume would be)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, support.APP_UID, support.APP_UID)
    else:
        path.chmod(0o777)
    return path


def locked_down() -> list[str]:
    uid = support.APP_UID
    return ["--read-only", "--tmpfs", "/tmp:rw,mode=1777,size=64m", "--user", f"{uid}:{uid}", "--cap-drop", "ALL"]


def stored_faces(root: Path) -> dict[Path, dict[str, str]]:
    """PNG path -> metadata sidecar, for every complete face under the store directory."""
    return {
        png: json.loads(png.with_name(png.name + ".json").read_text())
        for png in root.rglob("*.png")
        if png.with_name(png.name + ".json").is_file()
    }


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, str, int | None]:
    """(host folder to mount, the source's name in it, frames expected): the project's test video
    from ../shared/data, else (a machine without ../shared, e.g. public CI) a folder with
    matplotlib's public-domain portrait, as `make demo` uses."""
    video = support.SHARED / "data" / "video" / "short_hamilton_clip.mp4"
    if video.is_file():
        return video.parent, video.name, 275
    cbook = pytest.importorskip("matplotlib.cbook", reason="no ../shared test video and no matplotlib for a sample portrait")
    folder = tmp_path / "source" / "portraits"
    folder.mkdir(parents=True)
    shutil.copyfile(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), folder / "grace_hopper.jpg")
    return folder.parent, folder.name, 1


@pytest.fixture
def containers(podman: support.Podman):
    """Start containers through this list; all are removed at the end, with logs on failure."""
    started: list[support.Container] = []
    yield started
    for container in reversed(started):
        podman.remove(container.name)


def test_pipeline_in_containers(
    podman: support.Podman,
    app_image: str,
    mosquitto_image: str,
    source: tuple[Path, str, int | None],
    tmp_path: Path,
    containers: list[support.Container],
    container_report: list[str],
) -> None:
    out = writable_by_app(tmp_path / "out")
    faces = writable_by_app(tmp_path / "faces")
    spool = writable_by_app(tmp_path / "spool")
    edge_port, cloud_port = free_port(), free_port()

    for role, port in (("edge-broker", edge_port), ("cloud-broker", cloud_port)):
        broker = support.start_mosquitto(podman, tmp_path / role, role, port, mosquitto_image)
        containers.append(broker)
        wait_until(lambda port=port: port_open("127.0.0.1", port), 30, interval=0.05, what=f"{role} on 127.0.0.1:{port}")

    common = {"FACEPIPE_DEVICE_ID": DEVICE, "FACEPIPE_HTTP_HOST": "127.0.0.1", "FACEPIPE_LOG_FORMAT": "json"}
    edge = {"LOCAL_MQTT_HOST": "127.0.0.1", "LOCAL_MQTT_PORT": str(edge_port)}
    cloud = {"REMOTE_MQTT_HOST": "127.0.0.1", "REMOTE_MQTT_PORT": str(cloud_port)}
    components = {
        # processor: the image's default store, file:///var/lib/facepipe/faces, is the mounted directory.
        "processor": ({**cloud, "FACEPIPE_SHARE_GROUP": ""}, ["--volume", f"{faces}:/var/lib/facepipe/faces"]),
        "forwarder": ({**edge, **cloud}, ["--volume", f"{spool}:/var/lib/facepipe/spool"]),
        "logger": (edge, []),
        "camera": (
            {**edge, "FACEPIPE_CAMERA_ID": CAMERA, "FACEPIPE_SOURCE": f"/source/{source[1]}"},
            ["--volume", f"{source[0]}:/source:ro"],
        ),
    }
    http_ports: dict[str, int] = {}
    running: dict[str, support.Container] = {}
    for name, (env, volumes) in components.items():
        http_ports[name] = free_port()
        env = {**common, **env, "FACEPIPE_HTTP_PORT": str(http_ports[name]), "FACEPIPE_SUMMARY_FILE": f"/out/{name}.json"}
        options = [*locked_down(), "--volume", f"{out}:/out", *volumes]
        container = podman.start(support.unique_name(name), app_image, [name], env=env, options=options)
        containers.append(container)
        running[name] = container
        container.wait_ready(http_ports[name], timeout=60)

    times = {name: c.ready_seconds or 0.0 for name, c in running.items()}
    goal = "all under" if max(times.values()) < READY_GOAL_SECONDS else "NOT all under"
    container_report.append(
        "start-up (podman run -> /readyz 200): "
        + ", ".join(f"{n} {t:.2f}s" for n, t in times.items())
        + f" ({goal} the {READY_GOAL_SECONDS:.0f}s goal)"
    )

    # The camera ends by itself when the video does, after the broker acknowledged every face.
    camera = running["camera"]
    assert camera.wait(timeout=300) == 0, camera.logs()
    camera_summary = json.loads((out / "camera.json").read_text())
    published = camera_summary["published"]
    # (With the default publish policy the camera sends the best crop of each tracked face, so it
    # publishes fewer faces than it detects; what it published is what must arrive.)
    assert camera_summary["frames"] == source[2] and published > 0 and camera_summary["dropped"] == 0, camera_summary

    metrics_url = f"http://127.0.0.1:{http_ports['processor']}/metrics"
    try:
        wait_until(
            lambda: support.metric_value(support.http_text(metrics_url), PROCESSOR_STORED) >= published,
            120,
            interval=0.25,
            what="every face stored",
        )
    except AssertionError:  # wait_until's timeout
        pytest.fail(
            f"stored {len(stored_faces(faces))} of {published}:\n"
            + "\n".join(f"--- {n}\n{running[n].logs(20)}" for n in ("forwarder", "processor"))
        )

    for name in ("logger", "forwarder", "processor"):
        assert running[name].stop() == 0, running[name].logs()
    summaries = {name: json.loads((out / f"{name}.json").read_text()) for name in ("logger", "forwarder", "processor")}
    assert summaries["logger"]["faces"] == published and summaries["logger"]["lost"] == 0, summaries["logger"]
    assert summaries["forwarder"]["forwarded"] == published, summaries["forwarder"]
    assert summaries["processor"]["stored"] == published and summaries["processor"]["rejected"] == 0, summaries["processor"]

    stored = stored_faces(faces)
    assert len(stored) == published
    seqs = set()
    for png, metadata in stored.items():
        meta = FaceMeta.from_storage_metadata(metadata)
        assert (meta.device, meta.camera) == (DEVICE, CAMERA)
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert png.stat().st_uid == support.APP_UID or os.geteuid() != 0
        seqs.add(meta.seq)
    assert seqs == set(range(published))
    container_report.append(
        f"pipeline: {published} faces published by the camera container, {len(stored)} stored by the processor container"
    )

    slow = {name: t for name, t in times.items() if t > READY_LIMIT_SECONDS}
    assert not slow, f"components slower than {READY_LIMIT_SECONDS}s to become ready: {slow}"
