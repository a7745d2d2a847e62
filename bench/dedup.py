"""4. Dedup: messages sent per distinct face on the test video, publish policy `every` against `track`.

The real camera component runs on the video once per policy and a subscriber on the edge broker
collects every message's properties. The reference "distinct faces" are the face appearances of
the labelled per-frame file (short_hamilton_clip.yunet2023mar_frames.csv): runs of frames with a
face, a gap of up to half a second bridged, split where the box jumps (a cut to another shot).
A face "arrives" when at least one message carries a frame inside its appearance.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.detector import LIVE_MAX_FPS, STABLE_MAX_FPS, live
from bench.report import Row, at_least
from bench.support import DEVICE, VIDEO_FRAMES_CSV, Context, camera_setting
from facepipe.config import CameraSettings, CommonSettings, DetectorSettings
from facepipe_dev.brokers import MosquittoBroker
from facepipe_dev.components import camera_to_end
from facepipe_dev.paths import VIDEO

FACTOR_TARGET = 10.0
GAP_FRAMES = 15  # half a second at 29.97 fps


def appearances(path: Path = VIDEO_FRAMES_CSV, gap: int = GAP_FRAMES) -> list[tuple[int, int]]:
    """(first frame, last frame) of each labelled face appearance."""
    found: list[list[int]] = []
    last: tuple[int, float, float, float, float] | None = None
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if not row["first_box_xywh"].strip():
                continue
            frame = int(row["frame"])
            x, y, w, h = (float(v) for v in row["first_box_xywh"].split())
            cx, cy = x + w / 2, y + h / 2
            if (
                last is not None
                and frame - last[0] <= gap
                and abs(cx - last[1]) <= max(w, last[3])
                and abs(cy - last[2]) <= max(h, last[4])
            ):
                found[-1][1] = frame
            else:
                found.append([frame, frame])
            last = (frame, cx, cy, w, h)
    return [(a, b) for a, b in found]


def run_camera(ctx: Context, broker: MosquittoBroker, settings: CameraSettings, label: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Run the camera on the video to its end; (its summary, the properties of every message it published)."""

    def watch(pid: int | None) -> None:
        if pid is None:
            ctx.rss.unwatch("camera")
        else:
            ctx.rss.watch("camera", pid)

    return camera_to_end(settings, broker.host, broker.port, ctx.scratch(f"dedup-{label}"), watch)


def covered(reference: list[tuple[int, int]], records: list[dict[str, str]]) -> int:
    frames = sorted(int(r["frame"]) for r in records)
    return sum(1 for first, last in reference if any(first <= f <= last for f in frames))


def run(ctx: Context) -> list[Row]:
    reference = appearances()
    policy = camera_setting("FACEPIPE_PUBLISH_POLICY")
    rows: list[Row] = []
    broker = MosquittoBroker(ctx.scratch("dedup-broker"), name="edge-broker").start()
    base = CameraSettings(common=CommonSettings(device_id=DEVICE), detect=DetectorSettings(model_dir=str(ctx.model_dir)), source=str(VIDEO))
    ref = f"{len(reference)} labelled appearances (frames {', '.join(f'{a}–{b}' for a, b in reference)})"
    try:
        ctx.rss.phase = "camera on the video (dedup)"
        runs: list[tuple[str, CameraSettings]] = []
        if policy is None:
            runs.append(("every", base))  # the camera without policies publishes every face
        else:
            runs.append(("every", replace(base, publish_policy="every")))
            runs.append(("track", replace(base, publish_policy="track")))
            if camera_setting("FACEPIPE_MOTION_GATE") is not None:
                label = f"track + motion gate, live 30 fps analysed ≤ {LIVE_MAX_FPS:.0f}/s"
                runs.append((label, live(base, stable=False)))
                runs.append((f"{label}, ≤ {STABLE_MAX_FPS:.0f}/s while faces are tracked", live(base, stable=True)))
        results: dict[str, tuple[int, int, int]] = {}
        for label, settings in runs:
            summary, records = run_camera(ctx, broker, settings, label.split(" ")[0] + str(len(results)))
            published = int(summary.get("published", 0))
            tracks = len({r["track"] for r in records if "track" in r})
            hit = covered(reference, records)
            results[label] = (published, tracks, hit)
            fewer = f"{results['every'][0] / max(published, 1):.1f}× fewer messages than every; " if label != "every" else ""
            rows.append(
                Row(
                    "4 dedup",
                    f"policy {label}: messages per distinct face",
                    f"{published / len(reference):.1f} ({published} messages)",
                    target="every face arrives",
                    met=hit == len(reference),
                    note=f"{hit}/{len(reference)} faces arrived; {fewer}{f'{tracks} tracks; ' if tracks else ''}{summary.get('frames', 0)} frames analysed; reference: {ref}",
                )
            )
        if policy is None:
            rows.append(
                Row("4 dedup", "policy track: messages per distinct face", "skipped", note="FACEPIPE_PUBLISH_POLICY does not exist yet")
            )
            return rows
        every, track = results["every"][0], results["track"][0]
        ratio, met = at_least(every / max(track, 1), FACTOR_TARGET)
        rows.append(
            Row(
                "4 dedup",
                "every ÷ track: messages sent",
                f"{every / max(track, 1):.1f}× fewer",
                target=f"≥ {FACTOR_TARGET:.0f}× fewer, every face arrives",
                ratio=ratio,
                met=met and results["track"][2] == len(reference),
            )
        )
    finally:
        broker.stop()
    return rows
