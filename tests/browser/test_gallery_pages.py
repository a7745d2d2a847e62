"""The gallery's pages in a real headless Chromium, over a real Ceph RGW filled by a real processor.

Faces go through the cloud broker: a load generator publishes them as a forwarder would
(`cam_bin_remote/<device>`, full metadata), the processor stores them in S3, and the gallery,
subscribed to the same topic, pushes each one to the open pages once it is stored. Every page is
photographed into the test's output folder (test-output/<test>/).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from facepipe import contract
from facepipe.contract import Capture, FaceMeta, Status
from facepipe.metric_names import PROCESSOR_STORED
from facepipe.probe import synthetic_face
from facepipe_dev.components import start_ready
from facepipe_dev.gallery import PASSWORDS, GalleryClient, start_gallery, unreachable_store, write_users
from facepipe_dev.loadgen import LoadGenerator
from facepipe_dev.mqtt import TestClient
from facepipe_dev.processes import free_port, wait_until
from facepipe_dev.rgw import RadosGateway
from facepipe_dev.rig import Rig
from facepipe_dev.store import Store

PAGE_SIZE = 60  # the gallery's default page
BUSY_DEVICE_FACES = PAGE_SIZE + 15  # more than one page
LIVE_WITHIN_SECONDS = 2.0


class Stack:
    """Cloud broker, processor (into an RGW bucket) and gallery (live updates on), on the devkit's Rig;
    `publish` sends faces through them."""

    def __init__(self, workdir: Path, rgw: RadosGateway) -> None:
        self.rig = Rig.start(workdir, store=Store.s3(rgw, f"gallery-pages-{free_port()}"))
        try:
            self.store = self.rig.store
            self.s3, self.bucket = self.store.client, self.store.bucket
            self.broker = self.rig.cloud_broker
            self.processor = self.rig.processor()
            port = free_port()
            users = write_users(workdir / "gallery-users")
            start_ready(self.processor, self.rig.gallery(users, host="127.0.0.1", port=port, secure_cookies=False, live=True))
            self.announcer = TestClient(self.broker.host, self.broker.port)  # last: nothing after it can fail
        except BaseException:
            self.rig.close()
            raise
        self.url = f"http://127.0.0.1:{port}"
        self.published = 0

    def publish(self, device: str, count: int, camera: str = "load0") -> LoadGenerator:
        """Publish `count` faces of `device` (broker-acknowledged) and wait until the processor has stored them all."""
        topic = f"cam_bin_remote/{device}"
        load = LoadGenerator(self.broker.host, self.broker.port, topic=topic, device=device, camera=camera, rate=200, count=count)
        with load:
            load.wait_sent(count)
        load.stop()
        self.published += count
        wait_until(lambda: self.processor.metrics().get(PROCESSOR_STORED, 0) >= self.published, what="faces stored")
        return load

    def store_earlier(self, device: str, moments: list[datetime], camera: str = "cam0") -> None:
        """Faces captured at `moments`, written as the processor stores them (as a spool that was offline delivers late)."""
        for seq, moment in enumerate(moments):
            meta = FaceMeta(device, camera, "e4a1", seq, moment, seq, 0, (0, 0, 96, 96), 0.9, "yunet/2023mar")
            key = contract.object_key("faces", meta)
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=synthetic_face(), ContentType=contract.PNG, Metadata=meta.storage_metadata())

    def announce(self, device: str, component: str, state: str, capture: Capture | None = None) -> None:
        """A retained status, as a device's forwarder relays it."""
        status = Status(device, component, state, "b00f", datetime.now(UTC), 30.0, capture)
        self.announcer.client.publish(
            contract.remote_status_topic("cam_bin_remote", device, component), status.to_json(), qos=1, retain=True
        ).wait_for_publish(10)

    def keys(self, device: str) -> list[str]:
        return self.store.keys(f"faces/{device}/")

    def close(self) -> None:
        self.announcer.close()
        self.rig.close()


@pytest.fixture(scope="module")
def stack(rgw: RadosGateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    made = Stack(tmp_path_factory.mktemp("gallery-pages"), rgw)
    try:
        made.announce("edge-busy", "forwarder", "online")
        made.announce("edge-busy", "camera", "online", Capture("load0", "opened", 1200, 400, BUSY_DEVICE_FACES, 9.5))
        made.announce("edge-quiet", "forwarder", "offline")
        made.publish("edge-busy", BUSY_DEVICE_FACES)
        made.publish("edge-quiet", 3)
        yield made
    finally:
        made.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    made = browser.new_context(viewport={"width": 1100, "height": 720}, locale="en-GB", timezone_id="UTC")
    made.set_default_timeout(30_000)
    try:
        yield made
    finally:
        made.close()


def logged_in(context: Any, stack: Stack, user: str, path: str = "/") -> Any:
    page = context.new_page()
    page.goto(f"{stack.url}{path}")
    page.wait_for_selector("[data-testid=login]")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.click("form[data-testid=login] button[type=submit]")
    page.wait_for_selector("[data-testid=who]:has-text('(')")
    return page


# The images in view. Waits take a function, never an expression: Playwright polls an expression with eval(),
# which the gallery's Content-Security-Policy forbids (a wait that polls at all would fail).
IMAGES_IN_VIEW = """() => [...document.images].filter(img => {
    const box = img.getBoundingClientRect();
    return box.width > 0 && box.bottom > 0 && box.top < innerHeight;
})"""


def photograph(page: Any, path: Path) -> None:
    """A screenshot once every image in view has loaded (thumbnails and crops load after the page draws them)."""
    page.wait_for_function(f"() => ({IMAGES_IN_VIEW})().every(img => img.complete)")
    broken = page.evaluate(f"({IMAGES_IN_VIEW})().filter(img => img.naturalWidth === 0).map(img => img.src)")
    assert broken == [], f"images that did not decode: {broken}"
    page.screenshot(path=path)


def captured(page: Any) -> list[str]:
    return page.eval_on_selector_all("[data-testid=face]", "cards => cards.map(card => card.dataset.captured)")


def face_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("[data-testid=face]", "cards => cards.map(card => card.dataset.id)")


def test_no_credentials_no_faces(context: Any, stack: Stack, screenshots: Path) -> None:
    page = context.new_page()
    page.goto(f"{stack.url}/devices/edge-busy")
    page.wait_for_selector("[data-testid=login]")
    assert "/login" in page.url
    assert page.locator("[data-testid=face]").count() == 0
    status = page.evaluate("fetch('/api/faces?device=edge-busy').then(r => r.status)")
    assert status == 401
    page.fill("input[name=user]", "viewer")
    page.fill("input[name=password]", "not the password")
    page.click("form[data-testid=login] button[type=submit]")
    page.wait_for_selector("[data-testid=login-error]:has-text('wrong')")
    photograph(page, screenshots / "login-refused.png")


def test_devices_page_lists_each_device_with_todays_count(context: Any, stack: Stack, screenshots: Path) -> None:
    page = logged_in(context, stack, "viewer")
    page.wait_for_selector("[data-testid=devices] tr[data-device=edge-quiet]")
    counts = {
        row.get_attribute("data-device"): row.locator("[data-testid=faces-today]").inner_text()
        for row in page.locator("[data-testid=devices] tbody tr").all()
    }
    assert counts["edge-busy"] == str(len(stack.keys("edge-busy"))) == str(BUSY_DEVICE_FACES)
    assert counts["edge-quiet"] == "3"
    today = "-".join(stack.keys("edge-busy")[0].split("/")[2:5])
    link = page.locator("tr[data-device=edge-busy] [data-testid=faces-today] a")
    assert link.get_attribute("href") == f"/devices/edge-busy?day={today}"
    expect(page.locator("tr[data-device=edge-busy] [data-testid=last-seen] time")).to_have_count(1)
    expect(page.locator("tr[data-device=edge-busy]")).to_have_attribute("data-online", "true")
    expect(page.locator("tr[data-device=edge-busy] [data-testid=status]")).to_contain_text("load0: opened, 9.5 fps")
    expect(page.locator("tr[data-device=edge-quiet]")).to_have_attribute("data-online", "false")
    photograph(page, screenshots / "devices.png")


def test_a_device_coming_online_shows_without_a_reload(context: Any, stack: Stack, screenshots: Path) -> None:
    page = logged_in(context, stack, "viewer")
    page.wait_for_selector("#live[data-state=on]")
    expect(page.locator("tr[data-device=edge-quiet]")).to_have_attribute("data-online", "false")
    page.evaluate("window.sameDocument = true")
    stack.announce("edge-quiet", "forwarder", "online")
    expect(page.locator("tr[data-device=edge-quiet]")).to_have_attribute("data-online", "true", timeout=10_000)
    assert page.evaluate("window.sameDocument") is True
    stack.announce("edge-quiet", "forwarder", "offline")
    expect(page.locator("tr[data-device=edge-quiet]")).to_have_attribute("data-online", "false", timeout=10_000)
    photograph(page, screenshots / "devices-live.png")


def test_a_device_page_is_newest_first_and_pages_on(context: Any, stack: Stack, screenshots: Path) -> None:
    page = logged_in(context, stack, "viewer", "/devices/edge-busy")
    page.wait_for_selector("[data-testid=face]")
    first = captured(page)
    assert len(first) == PAGE_SIZE and first == sorted(first, reverse=True)
    photograph(page, screenshots / "device.png")
    page.click("[data-testid=more]")
    expect(page.locator("[data-testid=face]")).to_have_count(BUSY_DEVICE_FACES)
    everything = face_ids(page)
    expected = sorted((key.removeprefix("faces/") for key in stack.keys("edge-busy")), reverse=True)
    assert everything == expected, "both pages together: every face once, newest first"
    expect(page.locator("[data-testid=more]")).to_be_hidden()


def test_a_device_page_puts_faces_under_their_day_and_offers_its_cameras(context: Any, stack: Stack, screenshots: Path) -> None:
    stack.publish("edge-days", 2, camera="load1")
    today = "-".join(stack.keys("edge-days")[0].split("/")[2:5])
    yesterday = datetime.fromisoformat(today).replace(hour=12, tzinfo=UTC) - timedelta(days=1)
    stack.store_earlier("edge-days", [yesterday + timedelta(minutes=minute) for minute in range(3)])
    page = logged_in(context, stack, "viewer", "/devices/edge-days")
    expect(page.locator("[data-testid=face]")).to_have_count(5)
    layout = page.eval_on_selector_all("[data-testid=faces] > *", "nodes => nodes.map(n => n.dataset.day || n.dataset.captured.slice(0, 10))")
    day = yesterday.date().isoformat()
    assert layout == [today, today, today, day, day, day, day], "a heading per day, then that day's faces newest first"
    assert page.eval_on_selector_all("#cameras option", "options => options.map(o => o.value)") == ["load1", "cam0"]
    photograph(page, screenshots / "device-days.png")
    page.click(f"[data-testid=day-heading][data-day='{day}'] a")
    page.wait_for_url(f"**/devices/edge-days?day={day}")
    expect(page.locator("[data-testid=face]")).to_have_count(3)
    assert page.eval_on_selector_all("[data-testid=day-heading]", "headings => headings.map(h => h.dataset.day)") == [day]
    page.fill("input[name=camera]", "cam0")
    page.click("form[data-testid=filters] button[type=submit]")
    page.wait_for_url(f"**/devices/edge-days?day={day}&camera=cam0")
    expect(page.locator("[data-testid=face]")).to_have_count(3)
    page.goto(f"{stack.url}/devices/edge-days?camera=load1")
    expect(page.locator("[data-testid=face]")).to_have_count(2)


def test_a_face_stored_while_the_page_is_open_appears_without_a_reload(context: Any, stack: Stack, screenshots: Path) -> None:
    page = logged_in(context, stack, "viewer", "/devices/edge-quiet")
    page.wait_for_selector("[data-testid=face]")
    page.wait_for_selector("#live[data-state=on]")
    page.evaluate("window.sameDocument = true")
    before = set(face_ids(page))
    load = LoadGenerator(stack.broker.host, stack.broker.port, topic="cam_bin_remote/edge-quiet", device="edge-quiet", rate=10, count=1)
    with load:
        load.wait_sent(1)
        acknowledged = time.monotonic()
        expect(page.locator("[data-testid=face]")).to_have_count(len(before) + 1, timeout=10_000)
        seconds = time.monotonic() - acknowledged
    stack.published += 1
    new = set(face_ids(page)) - before
    assert len(new) == 1 and face_ids(page)[0] in new, "the new face is first"
    first = page.eval_on_selector("[data-testid=faces]", "grid => [grid.children[0].dataset.day, grid.children[1].dataset.id]")
    assert first == [face_ids(page)[0].split("/", 1)[1][:10].replace("/", "-"), face_ids(page)[0]], "under its day's heading"
    assert page.evaluate("window.sameDocument") is True, "no reload"
    assert seconds <= LIVE_WITHIN_SECONDS, f"the face appeared {seconds:.2f} s after the broker took it"
    photograph(page, screenshots / "device-live.png")


def test_a_face_page_shows_the_crop_and_its_metadata(context: Any, stack: Stack, screenshots: Path) -> None:
    page = logged_in(context, stack, "viewer", "/devices/edge-quiet")
    page.click("[data-testid=face] >> nth=0")
    page.wait_for_selector("[data-testid=metadata]")
    text = page.locator("[data-testid=metadata]").inner_text()
    for label in ("Captured", "Camera", "Track", "Score", "Detector", "Bounding box", "Key"):
        assert label in text or label == "Track", label
    assert "loadgen/synthetic" in text and "faces/edge-quiet/" in text
    # The crop loads after the metadata is drawn: wait for the image to finish (or fail) loading, then check it decoded.
    page.wait_for_function("() => document.querySelector('[data-testid=image]')?.complete === true")
    assert page.evaluate("document.querySelector('[data-testid=image]').naturalWidth") > 0, "the crop loaded"
    with page.expect_download() as download:
        page.click("[data-testid=download]")
    assert download.value.suggested_filename.startswith("edge-quiet_") and download.value.suggested_filename.endswith(".png")
    photograph(page, screenshots / "face.png")


def test_an_admin_deletes_a_face_and_a_day_and_they_are_gone_from_s3(context: Any, stack: Stack, screenshots: Path) -> None:
    stack.publish("edge-erase", 4)
    keys = stack.keys("edge-erase")
    assert len(keys) == 4
    page = logged_in(context, stack, "admin", "/devices/edge-erase")
    page.on("dialog", lambda dialog: dialog.accept())
    page.wait_for_selector("[data-testid=face]")
    newest = face_ids(page)[0]
    page.click("[data-testid=face] >> nth=0")
    page.wait_for_selector("[data-testid=erase-face]")
    photograph(page, screenshots / "face-admin.png")
    page.click("[data-testid=erase-face]")
    page.wait_for_url("**/devices/edge-erase?deleted=1")
    assert f"faces/{newest}" not in stack.keys("edge-erase")
    with pytest.raises(stack.s3.exceptions.ClientError):
        stack.s3.head_object(Bucket=stack.bucket, Key=f"faces/{newest}")
    day = newest.split("/")[1:4]
    page.goto(f"{stack.url}/devices/edge-erase?day={'-'.join(day)}")
    page.wait_for_selector("[data-testid=erase-day]")
    page.click("[data-testid=erase-day]")
    page.wait_for_selector("[data-testid=banner]:has-text('Deleted 3 faces')")
    photograph(page, screenshots / "device-erased.png")
    assert stack.keys("edge-erase") == [], "the day's objects are gone from the bucket"


def test_an_erasure_leaves_no_trace_on_pages_open_elsewhere(context: Any, stack: Stack, screenshots: Path) -> None:
    stack.publish("edge-gone", 3)
    ids = sorted((key.removeprefix("faces/") for key in stack.keys("edge-gone")), reverse=True)
    device = logged_in(context, stack, "viewer", "/devices/edge-gone")
    expect(device.locator("[data-testid=face]")).to_have_count(3)
    face = context.new_page()
    face.goto(f"{stack.url}/faces/{ids[1]}")
    devices = context.new_page()
    devices.goto(f"{stack.url}/")
    today = devices.locator("tr[data-device=edge-gone] [data-testid=faces-today]")
    expect(today).to_have_text("3")
    for page in (device, face, devices):
        page.wait_for_selector("#live[data-state=on]")
        page.evaluate("window.sameDocument = true")
    admin = GalleryClient(stack.url, "admin")  # a script with the admin's credentials, not these pages
    assert admin.delete(f"/api/faces/{ids[0]}") == (200, {"deleted": 1})
    expect(device.locator("[data-testid=face]")).to_have_count(2)
    expect(today).to_have_text("2")
    expect(face.locator("[data-testid=image]")).to_have_count(1)
    assert admin.delete("/api/devices/edge-gone/faces?all=true") == (200, {"deleted": 2})
    expect(device.locator("[data-testid=face]")).to_have_count(0)
    expect(device.locator("[data-testid=day-heading]")).to_have_count(0)
    expect(device.locator("[data-testid=shown]")).to_have_text("0 faces shown")
    expect(today).to_have_text("0")
    expect(face.locator("[data-testid=banner]")).to_have_text("This face was deleted.")
    expect(face.locator("[data-testid=image]")).to_have_count(0)
    assert [page.evaluate("window.sameDocument") for page in (device, face, devices)] == [True, True, True], "no reload"
    photograph(face, screenshots / "face-deleted.png")
    photograph(device, screenshots / "device-emptied.png")


def test_a_viewer_sees_no_delete_button_and_the_api_refuses(context: Any, stack: Stack) -> None:
    page = logged_in(context, stack, "viewer", "/devices/edge-quiet")
    page.wait_for_selector("[data-testid=face]")
    assert page.locator("[data-testid^=erase]").count() == 0, "no erase button of any kind"
    face = face_ids(page)[0]
    page.goto(f"{stack.url}/faces/{face}")
    page.wait_for_selector("[data-testid=metadata]")
    assert page.locator("[data-testid=erase-face]").count() == 0
    day = "-".join(face.split("/")[1:4])
    page.goto(f"{stack.url}/devices/edge-quiet?day={day}")
    page.wait_for_selector("[data-testid=face]")
    assert page.locator("[data-testid=erase-day]").count() == 0
    status = page.evaluate(
        """async (face) => {
            const session = await (await fetch('/api/session')).json();
            const answer = await fetch('/api/faces/' + face, {method: 'DELETE', headers: {'X-CSRF-Token': session.csrf}});
            return answer.status;
        }""",
        face,
    )
    assert status == 403
    assert f"faces/{face}" in stack.keys("edge-quiet")


def test_a_store_that_is_down_is_said_on_the_page(context: Any, tmp_path: Path, screenshots: Path) -> None:
    storage, env = unreachable_store()
    gallery = start_gallery(tmp_path, storage, extra_env=env)
    try:
        page = context.new_page()
        page.goto(f"{gallery.gallery_url}/login")  # type: ignore[attr-defined]
        page.fill("input[name=user]", "viewer")
        page.fill("input[name=password]", PASSWORDS["viewer"])
        page.click("form[data-testid=login] button[type=submit]")
        page.wait_for_selector("[data-testid=banner]:has-text('not reachable')")
        page.wait_for_selector("[data-testid=unavailable]")
        photograph(page, screenshots / "store-down.png")
        assert gallery.process.running()
    finally:
        gallery.stop()
