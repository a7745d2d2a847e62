"""The benchmark suite runs: `python -m bench --quick --only detector` writes a RESULTS-like report
that parses, with the machine, the versions and every detector figure (not bench/RESULTS.md itself)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import parse_markdown_table
from facepipe_dev.brokers import find_mosquitto
from facepipe_dev.rgw import rgw_available

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "RESULTS.md"


def test_quick_detector_bench_writes_a_report_that_parses(tmp_path: Path, shared_data: Path, model_dir: Path) -> None:
    try:
        find_mosquitto()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    before = RESULTS.stat().st_mtime_ns if RESULTS.exists() else None
    output = tmp_path / "RESULTS.md"
    argv = [sys.executable, "-m", "bench", "--quick", "--only", "detector", "--no-profile"]
    argv += ["--output", str(output), "--workdir", str(tmp_path / "work"), "--model-dir", str(model_dir)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    text = output.read_text()
    for section in ("## Machine", "## Versions", "## Figures"):
        assert section in text
    for name in ("CPU", "cores", "RAM", "python", "opencv", "paho-mqtt", "mosquitto", "ceph"):
        assert re.search(rf"^- {re.escape(name)}[^:]*: \S", text, re.MULTILINE), name
    rows = parse_markdown_table(text)
    assert rows and all(row["Benchmark"] == "1 detector" for row in rows)
    measures = {row["Measure"]: row for row in rows}
    for detector in ("yunet", "haar"):
        for size in ("640×480", "1280×720"):
            value = measures[f"{detector} {size}, one core"]["Value"]
            assert re.fullmatch(r"[\d.]+ ms/frame, \d+ frames/s", value), value
        assert re.fullmatch(r"recall\(easy\) [01]\.\d{3}, precision [01]\.\d{3}", measures[f"{detector} on WIDER subset, IoU 0.5"]["Value"])
    assert all(row["Met"] in ("✓", "✗", "–", "") for row in rows)
    assert any(row["Target"] and row["Met"] in ("✓", "✗") for row in rows)
    assert "detector" in done.stdout and "ms/frame" in done.stdout  # the printed table
    # The committed results stay as the last full run left them.
    assert (RESULTS.stat().st_mtime_ns if RESULTS.exists() else None) == before


def test_quick_gallery_bench_reports_latencies_and_rss(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    argv = [sys.executable, "-m", "bench", "--quick", "--only", "gallery", "--no-profile", "--output", str(output), "--workdir", str(tmp_path / "w")]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    measures = {row["Measure"]: row["Value"] for row in parse_markdown_table(output.read_text())}
    for store in ("directory", "RGW") if rgw_available() is None else ("directory",):
        assert re.fullmatch(r"p50 \d+ ms, p95 \d+ ms", measures[f"newest page (60) of a device with 5,000 faces, {store}"])
        assert re.fullmatch(r"p50 \d+ ms, p95 \d+ ms", measures[f"a page (60) from the middle of that day (cursor), {store}"])
        assert re.fullmatch(r"\d+ MB serving pages, \d+ MB after thumbnails", measures[f"gallery RSS, {store}"])
        assert re.fullmatch(r"\d+ s \([\d,]+ faces/s\)", measures[f"filling the store with 5,000 faces, {store}"])
