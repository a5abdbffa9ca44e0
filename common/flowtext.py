"""How flow records read on a terminal: one compact line, or the row of a table.

Pure text building (rich `Text` with styles); the caller decides whether styles are
shown (a terminal) or dropped (a pipe). The wording is the answer to "why": every drop
names its reason, a policy drop the policies isolating the pod, every allowed new
connection the policy that allowed it on each side checked, or that none isolates.
"""

from __future__ import annotations

import datetime

from rich.table import Table
from rich.text import Text

from podwire.bpf.constants import reserved_label
from podwire.common.flow import FlowEnd, FlowRecord
from podwire.policy import Protocol

# Every protocol a NetworkPolicy port can name has ports; the others (ICMP) have none.
PORTED = frozenset(Protocol)
VERDICT_STYLES = {"FORWARDED": "green", "DROPPED": "bold red"}
COLUMNS = ("TIME", "NODE", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY")


def timestamp(record: FlowRecord) -> str:
    """`Nov 22 22:21:37.034`, in local time like `hubble observe`."""
    when = datetime.datetime.fromisoformat(record["time"]).astimezone()
    return when.strftime("%b %d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"


def endpoint(end: FlowEnd, protocol: str) -> str:
    """`ns/pod:port`, or the address with what it is (`world 10.98.0.250:80`), and the
    Service the end stands for (`x/web-1:8080 (service x/web)`)."""
    service = end.get("service")
    text = _address(end, protocol)
    return f"{text} (service {service})" if service else text


def _address(end: FlowEnd, protocol: str) -> str:
    port = f":{end.get('port')}" if protocol in PORTED else ""
    if end.get("ip") in (None, "0.0.0.0"):
        return "-"  # not IPv4: the datapath parsed no addresses
    if end.get("pod"):
        return f"{end.get('namespace')}/{end['pod']}{port}"
    what = reserved_label(end.get("identity", 0))
    address = f"{end.get('ip')}{port}"
    return f"{what} {address}" if what else address


def _pod_name(end: FlowEnd) -> str:
    return f"{end.get('namespace')}/{end['pod']}" if end.get("pod") else str(end.get("ip"))


def summary(record: FlowRecord) -> str:
    """How many it stands for (a flow the datapath counted), flags, then why the verdict:
    reason and isolating policies, or allowing ones."""
    parts = []
    count = int(record.get("count") or 1)
    if count > 1:
        parts.append(f"{count} {'packets' if record.get('verdict') == 'DROPPED' else 'connections'}")
    flags = record.get("tcp_flags") or []
    if flags:
        parts.append(",".join(flags))
    if record.get("verdict") == "DROPPED":
        reason = str(record.get("drop_reason"))
        text = f"{reason} {record.get('direction')}"
        isolated = record.get("isolated_by") or []
        if isolated:
            text += f", isolated by {', '.join(isolated)}"
        parts.append(text)
        return "; ".join(parts)
    source, destination = record["source"], record["destination"]
    allowed = record.get("allowed_by") or {}
    evaluated = record.get("evaluated") or []
    for side in ("egress", "ingress"):
        if side not in evaluated:
            continue
        subject = _pod_name(source if side == "egress" else destination)
        if allowed.get(side):
            parts.append(f"{side} allowed by {allowed[side]}")
        else:
            parts.append(f"{side}: no policy isolates {subject}")
    if (not evaluated and record.get("type") == "policy-verdict"
            and source.get("identity") == 1):
        parts.append("node reaches its own pods")
    return "; ".join(parts)


def compact(record: FlowRecord) -> Text:
    """One line a flow: time node src -> dst type verdict protocol summary."""
    protocol = str(record.get("protocol"))
    verdict = str(record.get("verdict"))
    line = Text()
    line.append(timestamp(record), style="dim")
    line.append(f" {record.get('node')} ", style="cyan")
    line.append(endpoint(record["source"], protocol), style="bold")
    line.append(" -> ")
    line.append(endpoint(record["destination"], protocol), style="bold")
    line.append(f" {record.get('type')} ")
    line.append(verdict, style=VERDICT_STYLES.get(verdict, ""))
    line.append(f" {protocol}")
    text = summary(record)
    if text:
        line.append(f" ({text})", style="red" if verdict == "DROPPED" else "")
    return line


def table(records: list[FlowRecord], header: bool = True) -> Table:
    """The table output; `header=False` for the rows a follower prints one by one."""
    grid = Table(show_header=header, header_style="bold", box=None, pad_edge=False)
    widths = (19, 8, 28, 28, 14, 9, None)
    for name, width in zip(COLUMNS, widths, strict=True):
        grid.add_column(name, min_width=width, no_wrap=width is not None,
                        overflow="fold")
    for record in records:
        protocol = str(record.get("protocol"))
        verdict = str(record.get("verdict"))
        grid.add_row(timestamp(record), str(record.get("node")),
                     endpoint(record["source"], protocol),
                     endpoint(record["destination"], protocol),
                     str(record.get("type")),
                     Text(verdict, style=VERDICT_STYLES.get(verdict, "")),
                     f"{protocol} {summary(record)}".strip())
    return grid


def lost_notice(node: str, count: int) -> str:
    """The line that says events were lost, so a quiet stretch is not read as no traffic."""
    return f"{count} event{'s' if count != 1 else ''} lost on {node}"
