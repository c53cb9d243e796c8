"""Where Cyclone DDS may talk: loopback only unless told otherwise.

Why: a test, a laptop demo or a CI job must never send discovery traffic to whatever network
the machine sits on (and must not pick up a robot's traffic either), so the default is a
configuration bound to 127.0.0.1, with multicast off and unicast discovery of peers on
localhost. A real robot overrides it: pass ``NetworkConfig(interfaces=("eth0",), ...)`` to
``make_node``, or set ``CYCLONEDDS_URI`` to your own Cyclone configuration (then this module
stays out of the way, as ``rmw_cyclonedds_cpp`` does).
"""

from __future__ import annotations

import ipaddress
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from intermimic_policy.ros.transport.base import TransportError

CYCLONE_NAMESPACE = "https://cdds.io/config"


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class NetworkConfig:
    """A Cyclone DDS network configuration.

    ``interfaces``: addresses ("127.0.0.1", "192.168.123.99") or interface names ("eth0").
    ``peers``: addresses to send unicast discovery to (needed when ``multicast`` is off).
    ``max_participants``: how many participants per host and domain unicast discovery probes
    for (each process's node is one participant).
    ``xml``: a complete Cyclone XML configuration (or a ``file://`` URI), used verbatim; the
    other fields are then ignored.
    """

    interfaces: tuple[str, ...] = ("127.0.0.1",)
    peers: tuple[str, ...] = ("127.0.0.1",)
    multicast: bool = False
    max_participants: int = 32
    # how long deleting a writer waits for a reader to acknowledge its data (Cyclone's default is
    # 1 s per writer: a node with six writers and a killed peer took 7 s to stop on Ctrl-C)
    writer_linger_s: float = 0.05
    xml: str | None = None

    def __post_init__(self) -> None:
        if self.xml is not None:
            if not self.xml.strip():
                raise TransportError("NetworkConfig.xml is empty")
            return
        if isinstance(self.interfaces, str) or isinstance(self.peers, str):
            raise TransportError("NetworkConfig interfaces and peers are tuples of strings")
        if not self.interfaces:
            raise TransportError("NetworkConfig needs at least one interface")
        if not self.multicast and not self.peers:
            raise TransportError("NetworkConfig with multicast off needs unicast peers, "
                                 "otherwise no participant can discover another")
        if not 0.0 <= self.writer_linger_s <= 10.0:
            raise TransportError(f"NetworkConfig.writer_linger_s must be in 0..10 s, got {self.writer_linger_s}")
        if not 1 <= self.max_participants <= 120:
            raise TransportError(f"NetworkConfig.max_participants must be in 1..120, "
                                 f"got {self.max_participants}")
        for value in (*self.interfaces, *self.peers):
            if not value or any(c.isspace() or c in "<>\"'&" for c in value):
                raise TransportError(f"NetworkConfig: invalid interface or peer {value!r}")

    @classmethod
    def loopback(cls) -> NetworkConfig:
        return cls()

    @classmethod
    def from_xml(cls, xml: str) -> NetworkConfig:
        return cls(xml=xml)

    def to_xml(self) -> str:
        """The Cyclone DDS XML text (``Domain Id="any"``: it applies to whichever domain)."""
        if self.xml is not None:
            return self.xml
        root = ET.Element("CycloneDDS", xmlns=CYCLONE_NAMESPACE)
        domain = ET.SubElement(root, "Domain", Id="any")
        general = ET.SubElement(domain, "General")
        interfaces = ET.SubElement(general, "Interfaces")
        for item in self.interfaces:
            key = "address" if _is_address(item) else "name"
            ET.SubElement(interfaces, "NetworkInterface", {key: item})
        ET.SubElement(general, "AllowMulticast").text = "true" if self.multicast else "false"
        internal = ET.SubElement(domain, "Internal")
        ET.SubElement(internal, "WriterLingerDuration").text = f"{int(round(self.writer_linger_s * 1000))} ms"
        discovery = ET.SubElement(domain, "Discovery")
        if self.peers:
            ET.SubElement(discovery, "ParticipantIndex").text = "auto"
            ET.SubElement(discovery, "MaxAutoParticipantIndex").text = str(self.max_participants - 1)
            peers = ET.SubElement(discovery, "Peers")
            for peer in self.peers:
                ET.SubElement(peers, "Peer", address=peer)
        return ET.tostring(root, encoding="unicode")


def default_network_config() -> NetworkConfig | None:
    """Loopback, unless ``CYCLONEDDS_URI`` names the user's own configuration (then None:
    Cyclone reads that variable itself)."""
    if os.environ.get("CYCLONEDDS_URI", "").strip():
        return None
    return NetworkConfig.loopback()
