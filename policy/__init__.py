"""NetworkPolicy v1 in pure Python: model, selectors, cluster, resolution and evaluation."""

from .cluster import NAMESPACE_NAME_LABEL, Cluster, ContainerPort, Namespace, Pod
from .documents import load_cluster, load_documents, parse_cluster, parse_object, parse_policies
from .errors import PolicyError, PolicyErrors
from .evaluate import DirectionVerdict, Verdict, evaluate, truth_table
from .labels import Labels
from .model import (
    Direction,
    IPBlock,
    NetworkPolicy,
    Peer,
    PolicyPort,
    PortlessProtocol,
    Protocol,
    Rule,
    TrafficProtocol,
)
from .resolve import (
    ANY_TRAFFIC,
    PortRange,
    is_isolated,
    peer_matches_ip,
    peer_matches_pod,
    pods_matching_peer,
    policies_selecting,
    port_matches,
    ports_match,
    resolve_ports,
    rule_admits,
    rule_peer_matches,
)
from .selectors import LabelSelector, Operator, Requirement, selector_matches

__all__ = [
    "ANY_TRAFFIC",
    "NAMESPACE_NAME_LABEL",
    "Cluster",
    "ContainerPort",
    "Direction",
    "DirectionVerdict",
    "IPBlock",
    "LabelSelector",
    "Labels",
    "Namespace",
    "NetworkPolicy",
    "Operator",
    "Peer",
    "Pod",
    "PolicyError",
    "PolicyErrors",
    "PolicyPort",
    "PortRange",
    "PortlessProtocol",
    "Protocol",
    "Requirement",
    "Rule",
    "TrafficProtocol",
    "Verdict",
    "evaluate",
    "is_isolated",
    "load_cluster",
    "load_documents",
    "parse_cluster",
    "parse_object",
    "parse_policies",
    "peer_matches_ip",
    "peer_matches_pod",
    "pods_matching_peer",
    "policies_selecting",
    "port_matches",
    "ports_match",
    "resolve_ports",
    "rule_admits",
    "rule_peer_matches",
    "selector_matches",
    "truth_table",
]
