"""The cluster as NetworkPolicy sees it: namespaces, pods and policies, with lookup indexes.

The agent's in-memory model and the reference evaluator share these types, so the
datapath and the evaluator cannot read the API objects differently.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

from .fields import Reader, child, item
from .labels import Labels, as_labels
from .model import IPAddress, IPNetwork, NetworkPolicy, Protocol, parse_metadata
from .names import port_name_error

# The API server sets this label on every namespace (immutable, equal to the name);
# policies use it to select a namespace by name.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Namespace:
    """A namespace and its labels (always including `kubernetes.io/metadata.name`)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=Labels)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "labels", as_labels(self.labels).merged({NAMESPACE_NAME_LABEL: self.name})
        )

    @classmethod
    def from_api(cls, obj: object) -> Namespace:
        """Decode a v1 Namespace object; raises PolicyErrors naming bad fields."""
        reader = Reader()
        namespace = _parse_namespace(obj, reader)
        reader.raise_if_failed()
        assert namespace is not None  # no errors implies a namespace was built
        return namespace


@dataclass(frozen=True)
class ContainerPort:
    """A container port; `name` (an IANA_SVC_NAME) is what named policy ports refer to."""

    name: str | None
    port: int
    protocol: Protocol = Protocol.TCP

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocol", Protocol(self.protocol))


@dataclass(frozen=True)
class Pod:
    """A pod as policy sees it. `ip` is None until the pod has an address.

    `ips` is every address of the pod, one per family, `ip` (its primary, the API's
    status.podIP) first; `ip` alone stands for `ips == (ip,)`. Selectors name a pod
    whatever the family; an ipBlock matches the address of the connection's family
    (`in_family`).

    A `host_network` pod runs in its node's network namespace and its `ip` is the
    node's address: NetworkPolicy never selects it (as a target or as a peer); traffic
    from or to it is its node's.
    """

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=Labels)
    ip: str | None = None
    node: str | None = None
    ports: tuple[ContainerPort, ...] = ()
    host_network: bool = False
    ips: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Normalised here so equal pods compare equal however they were built.
        object.__setattr__(self, "labels", as_labels(self.labels))
        object.__setattr__(self, "ports", tuple(self.ports))
        ips = tuple(str(ipaddress.ip_address(ip)) for ip in self.ips)
        if self.ip is not None:
            ip = str(ipaddress.ip_address(self.ip))
            object.__setattr__(self, "ip", ip)
            ips = (ip, *(other for other in ips if other != ip))
        elif ips:
            object.__setattr__(self, "ip", ips[0])
        if len({":" in ip for ip in ips}) != len(ips):
            raise ValueError(f"pod {self.namespace}/{self.name}: addresses {', '.join(ips)} "
                             "are not one per family")
        object.__setattr__(self, "ips", ips)

    @property
    def key(self) -> str:
        """`namespace/name`."""
        return f"{self.namespace}/{self.name}"

    @cached_property
    def address(self) -> IPAddress | None:
        """`ip` parsed, for ipBlock matching."""
        return ipaddress.ip_address(self.ip) if self.ip is not None else None

    @cached_property
    def addresses(self) -> tuple[IPAddress, ...]:
        """Every address parsed, `address` first."""
        return tuple(ipaddress.ip_address(ip) for ip in self.ips)

    def address_of(self, version: int) -> IPAddress | None:
        """The address of family `version` (4 or 6), None if the pod has none."""
        return next((a for a in self.addresses if a.version == version), None)

    def in_family(self, version: int) -> Pod:
        """This pod as a connection of family `version` sees it: that family's address
        is its `ip` (what an ipBlock is matched against). Itself when it already is;
        raises ValueError when the pod has no address of the family."""
        if self.address is not None and self.address.version == version:
            return self
        found = self.address_of(version)
        if found is None:
            raise ValueError(f"pod {self.key} has no IPv{version} address")
        return replace(self, ip=str(found))

    def named_ports(self, name: str, protocol: Protocol) -> list[int]:
        """The port numbers this pod names `name` on `protocol` (usually zero or one)."""
        return [p.port for p in self.ports if p.name == name and p.protocol is protocol]

    @classmethod
    def from_api(cls, obj: object) -> Pod:
        """Decode a v1 Pod object (labels, container ports, status.podIP, spec.nodeName)."""
        reader = Reader()
        pod = _parse_pod(obj, reader)
        reader.raise_if_failed()
        assert pod is not None  # no errors implies a pod was built
        return pod


class Cluster:
    """Namespaces, pods and policies, indexed for the lookups policy resolution makes.

    Mutable so the agent can apply watch events in place (`set_*` / `remove_*`); the
    objects it holds are immutable. hostNetwork pods are held apart
    (`host_network_pods`): every lookup policy selection makes (`pods`, `pod`,
    `pods_in`, `pods_with_ip`, `pods_in_network`) sees only the pods on the pod network.
    """

    def __init__(
        self,
        namespaces: Iterable[Namespace] = (),
        pods: Iterable[Pod] = (),
        policies: Iterable[NetworkPolicy] = (),
    ) -> None:
        self._namespaces: dict[str, Namespace] = {}
        self._pods: dict[str, dict[str, Pod]] = {}
        self._policies: dict[str, dict[str, NetworkPolicy]] = {}
        self._pods_by_ip: dict[str, dict[str, Pod]] = {}
        self._host_network: dict[str, Pod] = {}
        # Derived views rebuilt on demand after a change; events come in bursts and
        # queries between them, so rebuilding lazily beats maintaining them per event.
        self._address_index: dict[int, tuple[list[int], list[Pod]]] | None = None
        self._names: list[str] | None = None
        for namespace in namespaces:
            self.set_namespace(namespace)
        for pod in pods:
            self.set_pod(pod)
        for policy in policies:
            self.set_policy(policy)

    @property
    def namespaces(self) -> Mapping[str, Namespace]:
        """Known namespaces by name."""
        return self._namespaces

    def namespace(self, name: str) -> Namespace:
        """The namespace `name`; one not (yet) seen has only its name label, as the API sets."""
        return self._namespaces.get(name) or Namespace(name)

    def namespace_names(self) -> list[str]:
        """Names of namespaces known by object or by pod (pods may come before their Namespace)."""
        if self._names is None:
            pod_namespaces = {name for name, pods in self._pods.items() if pods}
            self._names = sorted(set(self._namespaces) | pod_namespaces)
        return self._names

    def pods_in_network(self, network: IPNetwork) -> list[Pod]:
        """Pods whose address lies in `network`, found by bisection rather than a scan."""
        if self._address_index is None:
            self._address_index = self._index_addresses()
        keys, pods = self._address_index.get(network.version, ([], []))
        start = bisect.bisect_left(keys, int(network.network_address))
        end = bisect.bisect_right(keys, int(network.broadcast_address))
        return pods[start:end]

    def _index_addresses(self) -> dict[int, tuple[list[int], list[Pod]]]:
        index: dict[int, tuple[list[int], list[Pod]]] = {}
        for version in (4, 6):
            entries = sorted(
                (int(address), pod.key, pod)
                for pods in self._pods.values()
                for pod in pods.values()
                for address in pod.addresses
                if address.version == version
            )
            index[version] = ([entry[0] for entry in entries], [entry[2] for entry in entries])
        return index

    def pods(self) -> Iterator[Pod]:
        """Every pod."""
        for pods in self._pods.values():
            yield from pods.values()

    def host_network_pods(self) -> Iterator[Pod]:
        """Every hostNetwork pod (which no policy selects)."""
        yield from self._host_network.values()

    def pods_in(self, namespace: str) -> Iterable[Pod]:
        """The pods of one namespace."""
        return self._pods.get(namespace, {}).values()

    def pod(self, namespace: str, name: str) -> Pod | None:
        """One pod by name, or None."""
        return self._pods.get(namespace, {}).get(name)

    def pods_with_ip(self, ip: str) -> list[Pod]:
        """Pods holding address `ip` (normally at most one)."""
        return list(self._pods_by_ip.get(str(ipaddress.ip_address(ip)), {}).values())

    def policies(self) -> Iterator[NetworkPolicy]:
        """Every policy."""
        for policies in self._policies.values():
            yield from policies.values()

    def policies_in(self, namespace: str) -> Iterable[NetworkPolicy]:
        """The policies of one namespace (a policy only ever selects pods of its own)."""
        return self._policies.get(namespace, {}).values()

    def in_family(self, version: int) -> Cluster:
        """The cluster as connections of family `version` (4 or 6) see it: every pod with
        an address of that family as `Pod.in_family`, pods without one left out (they
        cannot take part), pods without any address yet kept as they are."""
        pods = [
            pod if pod.address is None else pod.in_family(version)
            for pod in (*self.pods(), *self.host_network_pods())
            if pod.address is None or pod.address_of(version) is not None
        ]
        return Cluster(self._namespaces.values(), pods, self.policies())

    def set_namespace(self, namespace: Namespace) -> None:
        """Add or replace a namespace."""
        self._namespaces[namespace.name] = namespace
        self._names = None

    def remove_namespace(self, name: str) -> None:
        """Forget a namespace (its pods and policies stay until removed themselves)."""
        self._namespaces.pop(name, None)
        self._names = None

    def set_pod(self, pod: Pod) -> None:
        """Add or replace a pod."""
        self.remove_pod(pod.namespace, pod.name)
        if pod.host_network:
            self._host_network[pod.key] = pod
            return
        self._pods.setdefault(pod.namespace, {})[pod.name] = pod
        for ip in pod.ips:
            self._pods_by_ip.setdefault(ip, {})[pod.key] = pod
        self._names = None
        self._address_index = None

    def remove_pod(self, namespace: str, name: str) -> None:
        """Forget a pod, if known."""
        self._host_network.pop(f"{namespace}/{name}", None)
        old = self._pods.get(namespace, {}).pop(name, None)
        if old is None:
            return
        self._names = None
        self._address_index = None
        for ip in old.ips:
            holders = self._pods_by_ip.get(ip, {})
            holders.pop(old.key, None)
            if not holders:
                self._pods_by_ip.pop(ip, None)

    def set_policy(self, policy: NetworkPolicy) -> None:
        """Add or replace a policy."""
        self._policies.setdefault(policy.namespace, {})[policy.name] = policy

    def remove_policy(self, namespace: str, name: str) -> None:
        """Forget a policy, if known."""
        self._policies.get(namespace, {}).pop(name, None)

    def add_object(self, obj: Namespace | Pod | NetworkPolicy) -> None:
        """Add or replace any of the three kinds."""
        if isinstance(obj, Namespace):
            self.set_namespace(obj)
        elif isinstance(obj, Pod):
            self.set_pod(obj)
        else:
            self.set_policy(obj)


def _parse_namespace(obj: object, reader: Reader) -> Namespace | None:
    body = reader.mapping(obj, "")
    if body is None:
        return None
    meta = parse_metadata(body.get("metadata"), reader, None)
    if reader.errors or meta.name is None:
        return None
    return Namespace(meta.name, Labels(meta.labels))


def _parse_pod(obj: object, reader: Reader) -> Pod | None:
    # Pods carry far more than policy reads; only the fields read here are checked.
    body = reader.mapping(obj, "")
    if body is None:
        return None
    meta = parse_metadata(body.get("metadata"), reader, "default")
    spec = reader.mapping(body.get("spec") or {}, "spec")
    status = reader.mapping(body.get("status") or {}, "status")
    node = None
    host_network = False
    ports: list[ContainerPort] = []
    if spec is not None:
        if spec.get("nodeName") is not None:
            node = reader.string(spec["nodeName"], "spec.nodeName")
        if spec.get("hostNetwork") is not None:
            if isinstance(spec["hostNetwork"], bool):
                host_network = spec["hostNetwork"]
            else:
                reader.error("spec.hostNetwork", f"{spec['hostNetwork']!r}: must be a boolean")
        for field_name in ("initContainers", "containers"):
            containers_path = child("spec", field_name)
            containers = spec.get(field_name)
            for index, container in enumerate(
                reader.sequence(containers or [], containers_path) or []
            ):
                ports += _container_ports(container, item(containers_path, index), reader)
    ip = None
    ips: list[str] = []
    if status is not None and status.get("podIP"):
        ip = _address(reader, status["podIP"], "status.podIP")
    if status is not None and status.get("podIPs") is not None:
        ips = _pod_ips(reader, status["podIPs"], ip)
    if reader.errors or meta.name is None or meta.namespace is None:
        return None
    return Pod(meta.namespace, meta.name, Labels(meta.labels), ip, node, tuple(ports),
               host_network, tuple(ips))


def _address(reader: Reader, value: object, path: str) -> str | None:
    text = reader.string(value, path)
    try:
        return str(ipaddress.ip_address(text)) if text is not None else None
    except ValueError:
        reader.error(path, f"{text!r}: must be a valid IP address")
        return None


def _pod_ips(reader: Reader, value: object, primary: str | None) -> list[str]:
    """status.podIPs: `[{ip}]`, at most one per family, the first equal to podIP (as
    the API server validates them)."""
    path = "status.podIPs"
    found: list[str] = []
    for index, entry in enumerate(reader.sequence(value, path) or []):
        body = reader.mapping(entry, item(path, index), ("ip",))
        if body is None or body.get("ip") is None:
            reader.error(child(item(path, index), "ip"), "Required value")
            continue
        address = _address(reader, body["ip"], child(item(path, index), "ip"))
        if address is None:
            continue
        if any((":" in address) == (":" in other) for other in found):
            reader.error(item(path, index), f"{address!r}: may specify no more than one IP "
                         "for each IP family")
            continue
        found.append(address)
    if found and primary is not None and found[0] != primary:
        reader.error(path, f"{found[0]!r}: must match status.podIP {primary!r}")
    return found


def _container_ports(container: object, path: str, reader: Reader) -> list[ContainerPort]:
    body = reader.mapping(container, path)
    if body is None or body.get("ports") is None:
        return []
    ports = []
    ports_path = child(path, "ports")
    for index, entry in enumerate(reader.sequence(body["ports"], ports_path) or []):
        port_path = item(ports_path, index)
        port_body = reader.mapping(entry, port_path)
        if port_body is None:
            continue
        number = reader.integer(port_body.get("containerPort"), child(port_path, "containerPort"))
        if number is not None and not 1 <= number <= 65535:
            reader.error(
                child(port_path, "containerPort"),
                f"{number}: must be between 1 and 65535, inclusive",
            )
            number = None
        name = None
        if port_body.get("name") is not None:
            name = reader.string(port_body["name"], child(port_path, "name"))
            problem = port_name_error(name) if name is not None else None
            if problem:
                reader.error(child(port_path, "name"), f"{name!r}: {problem}")
        protocol = Protocol.TCP
        if port_body.get("protocol") is not None:
            text = reader.string(port_body["protocol"], child(port_path, "protocol"))
            if text is not None and text not in Protocol.__members__:
                reader.error(child(port_path, "protocol"), f"Unsupported value: {text!r}")
            elif text is not None:
                protocol = Protocol(text)
        if number is not None:
            ports.append(ContainerPort(name, number, protocol))
    return ports
