"""6. Gallery: the API's p50/p95 for a device's newest page and for one day's page with 100,000 stored faces,
in Ceph RGW and in a directory, and the gallery's RSS.

The store holds 100,000 faces (1 KB PNG + metadata, as the processor writes them) of one device
over five days, 20,000 a day, today the newest: the hardest case for listing newest first (S3
lists in ascending order only; a day is 20 ListObjectsV2 pages). A real `facepipe gallery`
process answers `GET /api/faces` over HTTP, one request at a time, as a page does: the newest
page of 60, the first page of one (older) day, and a page from the middle of that day (a cursor);
plus the devices page (today's count, capped at 10,000). Each is asked WARMUP times, then REQUESTS
times. RSS is the gallery's after the page requests, and after the newest page's 60 thumbnails: those
faces are 320 px crops (a near face in 1080p), which the gallery scales to 160 px JPEGs with OpenCV.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil

from bench.report import Row
from bench.support import Context, percentile
from facepipe import contract
from facepipe.config import CommonSettings, GallerySettings, StoreSettings
from facepipe.contract import FaceMeta
from facepipe.gallery.auth import hash_password
from facepipe.probe import synthetic_face
from facepipe.storage import Store, open_store
from facepipe_dev.components import ComponentProcess
from facepipe_dev.processes import free_port

DEVICE = "bench-gallery"
DAYS = 5
FACES = 100_000
QUICK_FACES = 5_000
PAGE = 60
LARGE_CROP = 320
WARMUP = 3
REQUESTS = 40
QUICK_REQUESTS = 8
PASSWORD = "bench-password"


def fill(store: Store, faces: int, now: datetime, workers: int) -> float:
    """Store `faces` faces of DEVICE spread evenly over DAYS days ending now, in the processor's key layout, through
    the store interface (`workers` writers in parallel, no broker in between); seconds taken."""
    small, large = synthetic_face(), synthetic_face(LARGE_CROP)
    step = timedelta(days=DAYS) / faces
    start = now - timedelta(days=DAYS) + step
    boot = "b0a7"

    def put(seqs: range) -> None:
        for seq in seqs:
            side = LARGE_CROP if seq >= faces - PAGE else 96  # the newest page: crops its thumbnails are made of
            meta = FaceMeta(DEVICE, f"cam{seq % 2}", boot, seq, start + seq * step, seq, 0, (0, 0, side, side), 0.9, "bench/synthetic")
            store.put(contract.object_key(store.prefix, meta), large if side == LARGE_CROP else small, meta.storage_metadata())
            if seq % store.max_batch == store.max_batch - 1:
                store.sync()
        store.sync()

    chunk = 1000
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(put, (range(i, min(i + chunk, faces)) for i in range(0, faces, chunk))))
    return time.monotonic() - began


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.auth = "Basic " + base64.b64encode(f"bench:{PASSWORD}".encode()).decode()

    def get(self, path: str) -> tuple[float, bytes]:
        request = urllib.request.Request(self.base + path, headers={"Authorization": self.auth})
        began = time.perf_counter()
        with urllib.request.urlopen(request, timeout=120) as response:
            body = response.read()
        return time.perf_counter() - began, body

    def timed(self, path: str, count: int) -> list[float]:
        for _ in range(WARMUP):
            self.get(path)
        return [self.get(path)[0] for _ in range(count)]


def latency(seconds: list[float]) -> str:
    return f"p50 {percentile(seconds, 50) * 1000:.0f} ms, p95 {percentile(seconds, 95) * 1000:.0f} ms"


def measure(ctx: Context, label: str, storage: StoreSettings, env: dict[str, str], faces: int, now: datetime) -> list[Row]:
    workdir = ctx.scratch(f"gallery-{label}")
    store = open_store(storage)
    writers = 8 if label == "RGW" else 2
    fill_seconds = fill(store, faces, now, writers)
    users = workdir / "users"
    users.write_text(f"bench:viewer:{hash_password(PASSWORD)}\n")
    settings = GallerySettings(
        common=CommonSettings(device_id="bench"), storage=storage, live=False, host="127.0.0.1", port=free_port(),
        users_file=str(users), secure_cookies=False,
    )  # fmt: skip
    gallery = ComponentProcess("gallery", settings, workdir, env).start().wait_ready()
    count = QUICK_REQUESTS if ctx.quick else REQUESTS
    try:
        client = Client(f"http://127.0.0.1:{settings.port}")
        ctx.rss.phase = f"gallery over {label}"
        ctx.rss.watch("gallery", gallery.process.pid)
        day = (now - timedelta(days=2)).date()
        _, first = client.get(f"/api/faces?device={DEVICE}&day={day}&limit={PAGE}")
        cursor = json.loads(first)["next"]
        for _ in range(faces // DAYS // PAGE // 2 - 1):  # walk to the middle of that day
            cursor = json.loads(client.get(f"/api/faces?device={DEVICE}&day={day}&limit={PAGE}&cursor={cursor}")[1])["next"]
        per_day = faces // DAYS
        timings = {
            f"newest page ({PAGE}) of a device with {faces:,} faces": client.timed(f"/api/faces?device={DEVICE}&limit={PAGE}", count),
            f"first page ({PAGE}) of one day of {per_day:,} faces": client.timed(f"/api/faces?device={DEVICE}&day={day}&limit={PAGE}", count),
            f"a page ({PAGE}) from the middle of that day (cursor)": client.timed(
                f"/api/faces?device={DEVICE}&day={day}&limit={PAGE}&cursor={cursor}", count
            ),
            "devices page (today's count, up to 10,000)": client.timed("/api/devices", max(3, count // 4)),
        }
        ctx.rss.sample()
        pages_rss = psutil.Process(gallery.process.pid).memory_info().rss
        newest = json.loads(client.get(f"/api/faces?device={DEVICE}&limit={PAGE}")[1])["faces"]
        thumbs = [client.get(face["thumbnail"])[0] for face in newest]
        thumbs_rss = psutil.Process(gallery.process.pid).memory_info().rss
        ctx.rss.unwatch("gallery")
    finally:
        gallery.stop()
    rows = [Row("6 gallery", f"{measure_name}, {label}", latency(seconds)) for measure_name, seconds in timings.items()]
    rows.append(Row("6 gallery", f"{PAGE} thumbnails of the newest page, {label}", latency(thumbs), note=f"made from {LARGE_CROP} px crops"))
    rss = f"{pages_rss / 2**20:.0f} MB serving pages, {thumbs_rss / 2**20:.0f} MB after thumbnails"
    rows.append(Row("6 gallery", f"gallery RSS, {label}", rss))
    rows.append(
        Row(
            "6 gallery",
            f"filling the store with {faces:,} faces, {label}",
            f"{fill_seconds:.0f} s ({faces / fill_seconds:,.0f} faces/s)",
            note=f"{writers} writers through the store interface, no broker",
        )
    )
    return rows


def run(ctx: Context) -> list[Row]:
    faces = QUICK_FACES if ctx.quick else FACES
    now = datetime.now(UTC).replace(microsecond=0)
    rows = measure(ctx, "directory", StoreSettings(store=f"file://{ctx.scratch('gallery-faces')}"), {}, faces, now)
    gateway: Any = ctx.rgw()
    if gateway is None:
        return [*rows, Row("6 gallery", "RGW", "skipped", note="Ceph RGW not installed")]
    bucket = "bench-gallery"
    gateway.client().create_bucket(Bucket=bucket)
    storage = gateway.store_settings(f"s3://{bucket}/faces")
    return rows + measure_s3(ctx, gateway, storage, faces, now)


def measure_s3(ctx: Context, gateway: Any, storage: StoreSettings, faces: int, now: datetime) -> list[Row]:
    saved = {name: os.environ.get(name) for name in gateway.env()}
    os.environ.update(gateway.env())  # boto3 in this process (the filling) reads the same credentials as the gallery
    try:
        return measure(ctx, "RGW", storage, gateway.env(), faces, now)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


