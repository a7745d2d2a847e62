"""The rig: brokers, a store and the pipeline's four components on loopback, each a real process.

`facepipe run`, the integration tests and the bench wire the pipeline here and nowhere else:

    rig = Rig.start(workdir)                               # an edge and a cloud broker of its own
    rig = Rig.on(workdir, edge_broker, cloud_broker)        # brokers someone else started (fixtures)
    processor, forwarder = rig.pipeline()                  # started and ready
    logger = rig.logger().start()
    camera = rig.camera(source=..., detect=...).start()
    load = rig.load()                                      # a LoadGenerator on the edge broker
    rig.close()                                            # stops what the rig started, last first

Every component gets the settings a chart would give it: the rig's device identity (`common`), the
edge broker (`local`), its own credentials for the cloud broker (`uplink`), and the processor the
rig's store. Keyword options override any field of a component's settings.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from facepipe import contract
from facepipe.config import (
    BrokerSettings,
    CameraSettings,
    CommonSettings,
    ForwarderSettings,
    GallerySettings,
    LoggerSettings,
    ProcessorSettings,
)
from facepipe_dev.brokerauth import CloudAuth, mosquitto_passwd_available
from facepipe_dev.brokers import MosquittoBroker, secured
from facepipe_dev.components import ComponentProcess, start_ready
from facepipe_dev.loadgen import LoadGenerator
from facepipe_dev.pki import LocalPKI, openssl_available
from facepipe_dev.store import Store

DEVICE = "edge-1"
PROCESSOR_DEVICE = "cloud"
GALLERY_BROKER_USER = "gallery"


@dataclass(frozen=True)
class Uplink:
    """How the forwarder, the processor and the gallery reach the cloud broker (their own credentials each;
    the gallery's defaults to the processor's)."""

    forwarder: BrokerSettings
    processor: BrokerSettings
    gallery: BrokerSettings | None = None


class Rig:
    """The pipeline on loopback; `close()` (or the end of a `with`) stops every process it started."""

    def __init__(
        self,
        workdir: Path,
        local: BrokerSettings,
        uplink: Uplink,
        *,
        common: CommonSettings | None = None,
        store: Store | None = None,
        edge: MosquittoBroker | None = None,
        cloud: MosquittoBroker | None = None,
    ) -> None:
        self.workdir = workdir
        self.local, self.uplink = local, uplink
        self.common = common or CommonSettings(device_id=DEVICE)
        self.store = store or Store.directory(workdir / "faces")
        self.edge_broker, self.cloud_broker = edge, cloud
        self.components: dict[str, ComponentProcess] = {}
        self.loads: list[LoadGenerator] = []
        self.owned: list[MosquittoBroker] = []  # brokers the rig started itself

    @classmethod
    def on(
        cls,
        workdir: Path,
        edge: MosquittoBroker,
        cloud: MosquittoBroker,
        *,
        qos: int | None = None,
        local: BrokerSettings | None = None,
        remote: BrokerSettings | None = None,
        uplink: Uplink | None = None,
        **options: Any,
    ) -> Rig:
        """A rig on running brokers (not stopped by `close()`); `local` / `remote` are the connection settings to
        start from (their host and port become the brokers'), `qos` that of both hops."""
        hop = {} if qos is None else {"qos": qos}
        local = replace(local or BrokerSettings(), host=edge.host, port=edge.port, **hop)
        remote = replace(remote or BrokerSettings(topic=contract.DEFAULT_REMOTE_TOPIC), host=cloud.host, port=cloud.port, **hop)
        return cls(workdir, local, uplink or Uplink(remote, remote), edge=edge, cloud=cloud, **options)

    @classmethod
    def start(cls, workdir: Path, *, mosquitto: str = "mosquitto", secure: bool = False, **options: Any) -> Rig:
        """A rig with an edge and a cloud broker of its own. `secure`: the cloud broker as in production: TLS from
        a local CA, a password for the device and one for the processor, ACLs, no anonymous clients."""
        edge = MosquittoBroker(workdir / "edge-broker", name="edge-broker", binary=mosquitto).start()
        try:
            if secure:
                device = (options.get("common") or CommonSettings(device_id=DEVICE)).device_id
                cloud, uplink = _secure_cloud_broker(workdir, mosquitto, device, options.pop("remote", None) or BrokerSettings())
                options["uplink"] = uplink
            else:
                cloud = MosquittoBroker(workdir / "cloud-broker", name="cloud-broker", binary=mosquitto).start()
        except BaseException:
            edge.stop()
            raise
        rig = cls.on(workdir, edge, cloud, **options)
        rig.owned += [edge, cloud]
        return rig

    # --- components -----------------------------------------------------------------------------

    def add(self, name: str, settings: Any, extra_env: dict[str, str] | None = None, label: str = "") -> ComponentProcess:
        """`facepipe <name>` with `settings` (not started yet); `label` names a second one of a kind (its own folder)."""
        workdir = self.workdir / label if label else self.workdir
        component = ComponentProcess(name, settings, workdir, extra_env)
        self.components[label or name] = component
        return component

    def processor(
        self, store: Store | None = None, extra_env: dict[str, str] | None = None, label: str = "", **options: Any
    ) -> ComponentProcess:
        """The processor on the cloud broker, storing to `store` (from now on the rig's store)."""
        self.store = store or self.store
        fields = {
            "common": replace(self.common, device_id=PROCESSOR_DEVICE),
            "broker": self.uplink.processor,
            "storage": self.store.settings,
        }
        return self.add("processor", ProcessorSettings(**{**fields, **options}), {**self.store.env(), **(extra_env or {})}, label)

    def forwarder(self, label: str = "", **options: Any) -> ComponentProcess:
        fields = {"common": self.common, "local": self.local, "remote": self.uplink.forwarder}
        return self.add("forwarder", ForwarderSettings(**{**fields, **options}), label=label)

    def logger(self, label: str = "", **options: Any) -> ComponentProcess:
        return self.add("logger", LoggerSettings(**{"common": self.common, "broker": self.local, **options}), label=label)

    def camera(self, settings: CameraSettings | None = None, qos: int | None = None, label: str = "", **options: Any) -> ComponentProcess:
        """The camera on the edge broker (at `qos`, else the edge hop's): `settings` (else defaults with the rig's
        identity) with `options` applied."""
        broker = self.local if qos is None else replace(self.local, qos=qos)
        base = settings or CameraSettings(common=self.common)
        return self.add("camera", replace(base, broker=broker, **options), label=label)

    def gallery(self, users_file: Path, **options: Any) -> ComponentProcess:
        """The gallery over the rig's store, live updates from the cloud broker (its own read-only user where it has one)."""
        fields = {
            "common": replace(self.common, device_id=PROCESSOR_DEVICE),
            "storage": self.store.settings,
            "broker": self.uplink.gallery or self.uplink.processor,
            "users_file": str(users_file),
        }
        return self.add("gallery", GallerySettings(**{**fields, **options}), self.store.env())

    def pipeline(self, store: Store | None = None, extra_env: dict[str, str] | None = None) -> tuple[ComponentProcess, ...]:
        """Processor and forwarder, started and ready."""
        return start_ready(self.processor(store, extra_env), self.forwarder())

    def load(self, **options: Any) -> LoadGenerator:
        """A LoadGenerator publishing to the edge broker as this rig's device, started."""
        generator = LoadGenerator(self.local.host, self.local.port, topic=self.local.topic, device=self.common.device_id, **options)
        self.loads.append(generator)
        return generator.start()

    def __getitem__(self, name: str) -> ComponentProcess:
        return self.components[name]

    def metric(self, component: str, name: str) -> float:
        return self.components[component].metric(name)

    def pids(self) -> dict[str, int]:
        """Every running process of the rig by name: components, the brokers, the store's servers."""
        found = {name: c.process.pid for name, c in self.components.items() if c.process.running()}
        for broker in (self.edge_broker, self.cloud_broker):
            if broker is not None and broker.process is not None and broker.process.running():
                found[broker.name] = broker.process.pid
        if self.store.rgw is not None:
            found.update({f"ceph-{name}": pid for name, pid in self.store.rgw.pids().items()})
        return found

    def stop_components(self) -> None:
        """Stop the load generators and the components, last started first."""
        for generator in self.loads:
            generator.close()
        for component in reversed(self.components.values()):
            component.stop()

    def close(self) -> None:
        self.stop_components()
        for broker in reversed(self.owned):
            broker.stop()

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _secure_cloud_broker(workdir: Path, mosquitto: str, device: str, remote: BrokerSettings) -> tuple[MosquittoBroker, Uplink]:
    for missing in (openssl_available(), mosquitto_passwd_available()):
        if missing:
            raise FileNotFoundError(f"a secure cloud broker (--secure-uplink) needs it: {missing}")
    pki = LocalPKI(workdir / "pki")
    auth = CloudAuth(
        {device: secrets.token_urlsafe(18)}, ("processor", secrets.token_urlsafe(18)), remote.topic,
        readers={GALLERY_BROKER_USER: secrets.token_urlsafe(18)},
    ).write(workdir / "auth")  # fmt: skip
    security = secured(pki, auth)
    broker = MosquittoBroker(workdir / "cloud-broker", name="cloud-broker", binary=mosquitto, security=security).start()
    assert security.tls_port is not None
    tls = replace(remote, host=broker.host, port=security.tls_port, tls=True, ca_file=str(pki.ca_file))
    return broker, Uplink(
        forwarder=replace(tls, username=device, password=auth.devices[device]),
        processor=replace(tls, username=auth.processor[0], password=auth.processor[1]),
        gallery=replace(tls, username=GALLERY_BROKER_USER, password=auth.readers[GALLERY_BROKER_USER]),
    )
