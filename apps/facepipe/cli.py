"""The `facepipe` command: one subcommand per component, `run`, `probe`, `retention`, `models` and `hash-password`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from facepipe import __version__, config, models, mqtt_properties
from facepipe.config import ConfigError
from facepipe.errors import FatalError
from facepipe.observe import setup_logging
from facepipe.service import Component, serve

COMMANDS: dict[str, tuple[type, str]] = {
    "camera": (config.CameraSettings, "read a video source, detect faces, publish each crop to the edge broker"),
    "logger": (config.LoggerSettings, "log every face on the edge broker; count losses from seq gaps"),
    "forwarder": (config.ForwarderSettings, "republish faces from the edge broker to the cloud broker"),
    "processor": (config.ProcessorSettings, "validate faces from the cloud broker and store them as PNG"),
    "gallery": (config.GallerySettings, "serve the face gallery: pages and a JSON API over the store, live updates, erasure"),
    "run": (config.RunSettings, "run the whole pipeline on this machine (own brokers) until the source ends"),
    "probe": (config.ProbeSettings, "publish one synthetic face and wait for a component's counter (helm test)"),
    "retention": (
        config.RetentionSettings,
        "apply FACEPIPE_RETENTION_DAYS to the store once: an S3 lifecycle rule (keys allowed to set it), or prune a directory",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facepipe", description="Edge-to-cloud face capture pipeline.")
    parser.add_argument("--version", action="version", version=f"facepipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (settings_cls, summary) in COMMANDS.items():
        command = sub.add_parser(
            name, help=summary, description=f"{summary}. Every flag also reads the environment variable named in its help."
        )
        config.add_arguments(command, settings_cls)
    fetch = sub.add_parser("models", help="fetch and verify detector model files").add_subparsers(dest="action", required=True)
    fetch_cmd = fetch.add_parser("fetch", help="download (or copy from a mirror) and verify every model of the manifest")
    fetch_cmd.add_argument(
        "--manifest", type=Path, default=Path("models/manifest.json"), help="the models manifest (default: models/manifest.json)"
    )
    fetch_cmd.add_argument(
        "--dest", type=Path, default=None, help=f"destination (default: FACEPIPE_MODEL_DIR or {models.DEFAULT_MODEL_DIR})"
    )
    fetch_cmd.add_argument(
        "--mirror",
        type=Path,
        default=os.environ.get("FACEPIPE_MODEL_MIRROR") or None,
        help="local folder to copy files from when it has them (env FACEPIPE_MODEL_MIRROR)",
    )
    sub.add_parser(
        "hash-password",
        help="read a password from standard input, print its hash for a gallery users file",
        description="Prints scrypt$N$r$p$salt$key; a users file line is <name>:<viewer|admin>:<hash>.",
    )
    return parser


def _hash_password() -> int:
    from facepipe.gallery.auth import hash_password

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("facepipe hash-password: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("facepipe hash-password: empty password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def _apply_retention(settings: config.RetentionSettings, log: logging.Logger) -> int:
    from facepipe.storage import StoreUnavailable, open_store

    days = settings.storage.retention_days
    try:
        open_store(settings.storage).apply_retention(days)
    except StoreUnavailable as exc:
        log.error("retention.failed", extra={"store": settings.storage.store, "days": days, "error": str(exc)[:1000]})
        return 1
    log.info("retention.applied", extra={"store": settings.storage.store, "days": days})
    return 0


def _component(command: str, settings: object) -> Callable[..., Component]:
    if command == "camera":
        from facepipe.camera.camera import Camera

        return Camera
    if command == "logger":
        from facepipe.logger import FaceLogger

        return FaceLogger
    if command == "forwarder":
        from facepipe.forwarder import Forwarder

        return Forwarder
    if command == "gallery":
        from facepipe.gallery.server import Gallery

        return Gallery
    from facepipe.processor import Processor

    return Processor


def main(argv: list[str] | None = None) -> int:
    mqtt_properties.install()
    args = build_parser().parse_args(argv)
    if args.command == "hash-password":
        return _hash_password()
    if args.command == "models":
        dest = args.dest or models.model_dir(os.environ.get("FACEPIPE_MODEL_DIR", ""))
        try:
            models.fetch(args.manifest, dest, args.mirror)
        except (models.ModelError, OSError) as exc:
            print(f"facepipe models fetch: {exc}", file=sys.stderr)
            return 1
        return 0
    settings_cls, _ = COMMANDS[args.command]
    try:
        settings = config.load(settings_cls, args)
    except ConfigError as exc:
        print(f"facepipe {args.command}: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        config.print_effective(args.command, settings)
        return 0
    common = settings.camera.common if args.command == "run" else settings.common
    log = setup_logging(args.command, common.log_level, common.log_format)
    try:
        if args.command == "run":
            from facepipe_dev.run import run_pipeline

            return run_pipeline(settings, log)
        if args.command == "probe":
            from facepipe.probe import run_probe

            return run_probe(settings, log)
        if args.command == "retention":
            return _apply_retention(settings, log)
        return serve(_component(args.command, settings)(settings, log))
    except (FatalError, FileNotFoundError) as exc:
        log.error("fatal", extra={"error": str(exc)})
        print(f"facepipe {args.command}: {exc}", file=sys.stderr)
        return 2
