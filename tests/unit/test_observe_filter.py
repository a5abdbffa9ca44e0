"""Flow selection of `podwire observe`, with hubble's meaning: each flag selects what it
should, repeats OR, kinds AND, side-less flags pair source with source and destination
with destination, `--not` negates the next flag, and bad values or combinations fail
with a message naming them. The flags go through the real argument parser."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from podwire import cli, observe
from podwire.common import flowfilter

NOW = datetime.datetime(2026, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
End = tuple[str | None, str | None, str, int, int]


def flow(src: End, dst: End, *, verdict: str = "FORWARDED", type: str = "policy-verdict",
         protocol: str = "TCP", src_labels: dict[str, str] | None = None,
         dst_labels: dict[str, str] | None = None, age: float = 0.0,
         src_service: str | None = None, dst_service: str | None = None,
         node: str = "node1", direction: str = "egress", tcp_flags: tuple[str, ...] = (),
         drop_reason: str | None = None) -> dict[str, Any]:
    def end(spec: End, labels: dict[str, str] | None, service: str | None) -> dict[str, Any]:
        ns, pod, ip, port, identity = spec
        return {"namespace": ns, "pod": pod, "ip": ip, "port": port, "identity": identity,
                "labels": labels or {}, "service": service}
    return {"time": (NOW - datetime.timedelta(seconds=age)).isoformat(), "node": node,
            "type": type, "verdict": verdict, "protocol": protocol, "direction": direction,
            "tcp_flags": list(tcp_flags), "drop_reason": drop_reason,
            "source": end(src, src_labels, src_service),
            "destination": end(dst, dst_labels, dst_service)}


A = ("x", "alpha-1", "10.244.1.2", 40000, 256)
B = ("x", "beta", "10.244.2.3", 80, 257)
C = ("y", "alpha-2", "10.244.1.4", 53, 258)
WORLD = (None, None, "10.98.0.250", 443, 2)
HOST = (None, None, "10.98.0.11", 41000, 1)

FLOWS = {
    "a->b": flow(A, B, src_labels={"app": "alpha"}, dst_labels={"app": "beta", "tier": "web"},
                 dst_service="x/beta", tcp_flags=("SYN",)),
    "c->b": flow(C, B, verdict="DROPPED", src_labels={"app": "alpha"},
                 dst_labels={"app": "beta", "tier": "web"}, age=600, node="node2",
                 direction="ingress", tcp_flags=("SYN",), drop_reason="POLICY_DENIED"),
    "a->world": flow(A, WORLD, protocol="UDP", src_labels={"app": "alpha"}, age=120),
    "b->c": flow(B, C, type="drop", verdict="DROPPED", protocol="UDP",
                 src_labels={"app": "beta", "tier": "web"}, dst_labels={"app": "alpha"}, age=30,
                 src_service="x/beta", node="node2", drop_reason="INVALID_SOURCE"),
    "host->a": flow(HOST, A, dst_labels={"app": "alpha"}, age=5, direction="ingress",
                    tcp_flags=("SYN", "ACK")),
}
REASONS = flowfilter.Parsers(("POLICY_DENIED", "INVALID_SOURCE", "NO_ROUTE"))


def parse(*argv: str) -> Any:
    return cli.parser().parse_args(["observe", *argv])


def selected(*argv: str) -> set[str]:
    args = parse(*argv)
    query = flowfilter.build(args.filters, since=args.since, until=args.until, now=NOW,
                             parsers=REASONS)
    return {name for name, record in FLOWS.items() if query.matches(record)}


def test_no_flag_selects_everything() -> None:
    assert selected() == set(FLOWS)


@pytest.mark.parametrize(("argv", "want"), [
    (["--from-pod", "x/alpha"], {"a->b", "a->world"}),
    (["--from-pod", "x/"], {"a->b", "a->world", "b->c"}),
    (["--from-pod", "alpha"], {"a->b", "a->world", "c->b"}),
    (["--to-pod", "x/beta"], {"a->b", "c->b"}),
    (["--to-pod", "x/beta-2"], set()),
    (["--pod", "y/alpha-2"], {"c->b", "b->c"}),
    (["-n", "y"], {"c->b", "b->c"}),
    (["--from-namespace", "y"], {"c->b"}),
    (["--to-namespace", "x"], {"a->b", "c->b", "host->a"}),
    (["--from-ip", "10.244.1.0/24"], {"a->b", "a->world", "c->b"}),
    (["--to-ip", "10.98.0.250"], {"a->world"}),
    (["--ip", "10.244.2.3"], {"a->b", "c->b", "b->c"}),
    (["--port", "53"], {"c->b", "b->c"}),
    (["--from-port", "53"], {"c->b"}),
    (["--to-port", "53"], {"b->c"}),
    (["--protocol", "udp"], {"a->world", "b->c"}),
    (["--verdict", "dropped"], {"c->b", "b->c"}),
    (["--type", "drop"], {"b->c"}),
    (["-t", "trace"], set()),
    (["--label", "tier=web"], {"a->b", "c->b", "b->c"}),
    (["-l", "app=alpha,tier!=web"], {"a->b", "c->b", "a->world", "b->c", "host->a"}),
    (["-l", "tier"], {"a->b", "c->b", "b->c"}),
    (["-l", "!tier"], set(FLOWS)),
    (["-l", "app in (beta,gamma)"], {"a->b", "c->b", "b->c"}),
    (["-l", "app notin (alpha),tier"], {"a->b", "c->b", "b->c"}),
    (["--from-label", "app=alpha"], {"a->b", "c->b", "a->world"}),
    (["--to-label", "k8s:app=alpha"], {"b->c", "host->a"}),
    (["--to-service", "x/beta"], {"a->b"}),
    (["--to-service", "x/beta", "--to-service", "y/other"], {"a->b"}),
    (["--to-service", "beta"], {"a->b"}),
    (["--from-service", "x/beta"], {"b->c"}),
    (["--service", "x/beta"], {"a->b", "b->c"}),
    (["--to-service", "x/bet"], set()),
    (["--identity", "258"], {"c->b", "b->c"}),
    (["--from-identity", "host"], {"host->a"}),
    (["--to-identity", "reserved:world"], {"a->world"}),
    (["--to-identity", "2"], {"a->world"}),
    (["--node-name", "node2"], {"c->b", "b->c"}),
    (["--node-name", "node*"], set(FLOWS)),
    (["--node-name", "node1", "--node-name", "nodeX"], {"a->b", "a->world", "host->a"}),
    (["--tcp-flags", "SYN"], {"a->b", "c->b", "host->a"}),
    (["--tcp-flags", "syn,ack"], {"host->a"}),
    (["--tcp-flags", "FIN", "--tcp-flags", "ACK"], {"host->a"}),
    (["--traffic-direction", "ingress"], {"c->b", "host->a"}),
    (["--traffic-direction", "EGRESS"], {"a->b", "a->world", "b->c"}),
    (["--drop-reason", "policy_denied"], {"c->b"}),
    (["--drop-reason", "NO_ROUTE"], set()),
    (["--since", "5m"], {"a->b", "a->world", "b->c", "host->a"}),
    (["--since", "1m30s"], {"a->b", "b->c", "host->a"}),
    (["--since", "2026-05-01T11:59:45Z"], {"a->b", "host->a"}),
    (["--until", "1m"], {"c->b", "a->world"}),
    (["--since", "5m", "--until", "10s"], {"a->world", "b->c"}),
    (["-A"], set(FLOWS)),
])
def test_each_flag_selects_its_flows(argv: list[str], want: set[str]) -> None:
    assert selected(*argv) == want


def test_repeating_a_flag_ors_its_values() -> None:
    assert selected("--to-pod", "x/beta", "--to-pod", "y/alpha") == {"a->b", "c->b", "b->c"}
    assert selected("--protocol", "TCP", "--protocol", "UDP") == set(FLOWS)


def test_different_flags_and() -> None:
    assert selected("--to-pod", "x/beta", "--verdict", "DROPPED") == {"c->b"}
    assert selected("--from-pod", "x/alpha", "--to-pod", "y/") == set()
    assert selected("--from-namespace", "x", "--to-namespace", "y") == {"b->c"}


def test_side_less_flags_pair_source_with_source_and_destination_with_destination() -> None:
    # hubble: (source pod x/beta AND source port 53) OR (destination pod ... port 53).
    assert selected("--pod", "x/beta", "--port", "53") == set()
    assert selected("--pod", "x/beta", "--port", "80") == {"a->b", "c->b", "b->c"}
    assert selected("--pod", "y/alpha", "--port", "53") == {"c->b", "b->c"}
    assert selected("--pod", "y/alpha", "--port", "80") == set()
    # -n x with a port: x's end has that port; a->world's port 443 is world's end.
    assert selected("-n", "x", "--protocol", "UDP", "--port", "443") == set()
    assert selected("-n", "x", "--port", "40000") == {"a->b", "a->world", "host->a"}
    # A --from/--to flag holds on both sides of the pair.
    assert selected("--ip", "10.244.2.3", "--to-port", "53") == {"b->c"}


def test_namespaces_qualify_the_names_given_without_one() -> None:
    assert selected("--from-namespace", "y", "--from-pod", "alpha") == {"c->b"}
    assert selected("--to-namespace", "y", "--to-service", "beta") == set()
    assert selected("--to-namespace", "x", "--to-service", "beta") == {"a->b"}


def test_not_negates_the_next_flag_only() -> None:
    assert selected("--not", "--verdict", "DROPPED") == {"a->b", "a->world", "host->a"}
    assert selected("--not", "--pod", "x/alpha") == {"c->b", "b->c"}
    assert selected("--to-pod", "x/beta", "--not", "--from-namespace", "y") == {"a->b"}
    assert selected("--not", "--protocol", "UDP", "--to-namespace", "x") == {
        "a->b", "c->b", "host->a"}


def test_negated_flags_share_one_filter_as_in_hubble() -> None:
    # The denylist is one pair: flows from x/alpha-1 AND to the world are hidden.
    assert selected("--not", "--from-pod", "x/alpha", "--not", "--to-ip", "10.98.0.250") == (
        set(FLOWS) - {"a->world"})


@pytest.mark.parametrize(("argv", "message"), [
    (["--from-ip", "10.0.0.300"], "'10.0.0.300' is not an IP address or CIDR"),
    (["--port", "http"], "port 'http' is not a number"),
    (["--to-port", "70000"], "port '70000'"),
    (["--protocol", "GRE"], "protocol 'GRE' is not one of TCP, UDP, ICMP, ICMPv6, SCTP"),
    (["--verdict", "ALLOWED"], "verdict 'ALLOWED' is not one of FORWARDED, DROPPED"),
    (["--type", "l7"], "type 'l7'"),
    (["-l", "=x"], "has no valid label key"),
    (["--since", "yesterday"], "--since 'yesterday': expected a duration"),
    (["--until", "soon"], "--until 'soon': expected a duration"),
    (["--since", "10s", "--until", "5m"], "--until '5m' is before --since '10s'"),
    (["--pod", "/a"], "expected NAMESPACE/NAME"),
    (["-n", ""], "namespace filter is empty"),
    (["--to-pod", ""], "pod filter is empty"),
    (["--from-service", "x/"], "service 'x/': expected NAMESPACE/NAME or NAME"),
    (["--identity", "everyone"], "identity 'everyone': expected a number or one of host"),
    (["--tcp-flags", "SYN,PUSH"], "tcp flag 'PUSH' in 'SYN,PUSH' is not one of"),
    (["--traffic-direction", "both"], "traffic direction 'both' is not one of ingress"),
    (["--drop-reason", "TOO_LOUD"], "drop reason 'TOO_LOUD' is not one of POLICY_DENIED"),
    (["--node-name", " "], "node name filter is empty"),
    (["--not"], "trailing --not found in the arguments"),
    (["--not", "--not", "--pod", "a"], "consecutive --not statements"),
    (["--label", "a=b", "--from-label", "c=d"], "filters --label and --from-label cannot"),
    (["--port", "1", "--to-port", "2"], "filters --port and --to-port cannot be combined"),
    (["--identity", "1", "--from-identity", "2"], "filters --identity and --from-identity"),
    (["-n", "x", "--from-pod", "a"], "filters --namespace and --from-pod cannot be combined"),
    (["--from-ip", "10.0.0.1", "--from-pod", "x/a"], "filters --from-ip and --from-pod"),
    (["--from-namespace", "x", "--from-pod", "y/a"],
     "namespace conflict: --from-namespace 'x' does not contain y/a"),
])
def test_bad_values_name_what_was_wrong(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        selected(*argv)
    assert message in str(caught.value)


def test_a_conflict_is_per_list_as_in_hubble() -> None:
    # Port 80 at either end, but not as the destination: x/beta's replies.
    assert selected("--port", "80", "--not", "--to-port", "80") == {"b->c"}


def test_all_namespaces_refuses_a_namespace_flag() -> None:
    with pytest.raises(ValueError, match="-A/--all-namespaces cannot be combined with "
                                         "--from-namespace"):
        observe.query_from(parse("-A", "--from-namespace", "x"))


def test_merge_orders_nodes_by_time() -> None:
    node1 = [flow(A, B, age=30), flow(A, B, age=10)]
    node2 = [flow(C, B, age=20), flow(C, B, age=0)]
    merged = flowfilter.merge_by_time([node1, node2])
    assert [r["time"] for r in merged] == sorted(r["time"] for r in node1 + node2)
    assert [r["source"]["pod"] for r in merged] == ["alpha-1", "alpha-2", "alpha-1", "alpha-2"]


@pytest.mark.parametrize(("argv", "want"), [
    ([], observe.Window(last=20)),
    (["-f"], observe.Window(last=0)),
    (["--last", "3"], observe.Window(last=3)),
    (["--first", "3"], observe.Window(first=3)),
    (["--all"], observe.Window()),
    (["--since", "5m"], observe.Window()),
    (["--since", "5m", "--last", "2"], observe.Window(last=2)),
])
def test_first_last_and_all_choose_the_window(argv: list[str], want: observe.Window) -> None:
    assert observe.window_from(parse(*argv)) == want


@pytest.mark.parametrize(("argv", "message"), [
    (["--first", "1", "--last", "1"], "cannot set both --first and --last"),
    (["--first", "1", "--all"], "cannot set both --first and --all"),
    (["--first", "1", "-f"], "cannot set both --first and --follow"),
    (["--last", "1", "--all"], "cannot set both --last and --all"),
    # -4/-6 are flags, so argparse reads "-1" as one too: a negative count is given as
    # --last=-1.
    (["--last=-1"], "--last -1: expected 0 or more"),
])
def test_window_flags_that_exclude_each_other(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        observe.window_from(parse(*argv))


def test_the_window_cuts_the_matching_history() -> None:
    records = [flow(A, B, age=age) for age in (3, 2, 1)]
    assert observe.Window(first=2).cut(records) == records[:2]
    assert observe.Window(last=2).cut(records) == records[1:]
    assert observe.Window(last=0).cut(records) == []
    assert observe.Window().cut(records) == records
