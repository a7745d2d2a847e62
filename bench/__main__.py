"""`python -m bench` (`make bench`): every benchmark of issue 8 in one run; prints a table, writes bench/RESULTS.md.

`--quick` is a smoke run with small counts; `--only detector,bridge` runs a subset; `--output PATH`
writes the results elsewhere (the tests do, so bench/RESULTS.md keeps the last full run).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import psutil

from bench import accuracy, bridge, dedup, detector, gallery, gitops, pipeline
from bench.report import Report, Row, machine, versions
from bench.support import Context, find_model_dir
from facepipe import mqtt_properties

BENCHMARKS: dict[str, Callable[[Context], list[Row]]] = {
    "detector": detector.run,
    "accuracy": accuracy.run,
    "pipeline": pipeline.run,
    "bridge": bridge.run,
    "dedup": dedup.run,
    "gallery": gallery.run,
    "gitops": gitops.run,
}
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "RESULTS.md"
# The hand-written reading of the figures (what limits each missed target), appended to the results.
ANALYSIS = Path(__file__).resolve().parent / "ANALYSIS.md"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts and short windows: a smoke run")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)} (pipeline includes peak RSS)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the results (default bench/RESULTS.md)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--model-dir", default="", help="fetched models (default: FACEPIPE_MODEL_DIR or the cache of `make models`)")
    parser.add_argument("--no-profile", action="store_true", help="do not run py-spy on the components whose targets are missed")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each benchmark wait up to SECONDS for other processes to leave the CPUs idle (< 15%% busy)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in filter(None, args.only.split(",")) if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return args


def wait_quiet(limit: float, busy_below: float = 15.0) -> float:
    """Percent of the CPUs in use (sampled over 2 s), waiting up to `limit` s for it to drop below `busy_below`."""
    deadline = time.monotonic() + limit
    while True:
        busy = psutil.cpu_percent(interval=2.0)
        if busy < busy_below or time.monotonic() >= deadline:
            return busy


def main(argv: list[str] | None = None) -> int:
    mqtt_properties.install()  # as facepipe.cli.main does: the bench's own MQTT clients use the same codec
    args = parse_args(sys.argv[1:] if argv is None else argv)
    selected = [name for name in BENCHMARKS if not args.only or name in args.only.split(",")]
    started = time.monotonic()

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # a SIGTERM (a CI timeout, kill) still stops what the benchmarks started

    signal.signal(signal.SIGTERM, on_signal)
    report = Report(argv=shlex.join(sys.argv[1:] if argv is None else argv))
    with tempfile.TemporaryDirectory(prefix="facepipe-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = Context(
            quick=args.quick, workdir=workdir, model_dir=find_model_dir(args.model_dir, workdir), report=report, profile=not args.no_profile
        )
        failed = []
        try:
            for name in selected:
                busy = wait_quiet(args.wait_quiet)
                load = os.getloadavg()[0]
                print(f"== {name} (machine {busy:.0f}% busy before it, load average {load:.1f})", flush=True)
                report.notes.append(f"Before `{name}` the machine's CPUs were {busy:.0f}% busy with other work (load average {load:.1f}).")
                t0 = time.monotonic()
                try:
                    report.extend(BENCHMARKS[name](ctx))
                except Exception as exc:
                    failed.append(name)
                    report.add(Row(name, "benchmark failed", "error", note=f"{type(exc).__name__}: {exc}"[:300]))
                    traceback.print_exc()
                print(f"   ({time.monotonic() - t0:.0f} s)", flush=True)
        finally:
            ctx.close()
    report.seconds = time.monotonic() - started
    print()
    print(report.table())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = report.markdown(machine(), versions())
    if ANALYSIS.is_file():
        text += "\n" + ANALYSIS.read_text()
    args.output.write_text(text)
    print(f"\nwrote {args.output} ({report.seconds:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
