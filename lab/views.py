"""Terminal tables for lab listings and probe matrices (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_listing(resource: str, listing: dict[str, Any]) -> None:
    table = Table(box=None, header_style="bold")
    if resource == "pods":
        for column in ("NAMESPACE", "NAME", "NODE", "IP", "PHASE", "LABELS"):
            table.add_column(column)
        for pod in listing["items"]:
            md, status = pod["metadata"], pod.get("status", {})
            labels = ",".join(f"{k}={v}" for k, v in sorted((md.get("labels") or {}).items()))
            table.add_row(md.get("namespace", ""), md["name"],
                          pod["spec"].get("nodeName") or "-", _pod_ips(status),
                          status.get("phase", "-"), labels)
    else:
        for column in ("NAME", "INTERNAL-IP", "POD-CIDR"):
            table.add_column(column)
        for node in listing["items"]:
            addresses = node.get("status", {}).get("addresses", [])
            ip = next((a["address"] for a in addresses if a["type"] == "InternalIP"), "-")
            cidrs = node["spec"].get("podCIDRs") or [node["spec"].get("podCIDR", "-")]
            table.add_row(node["metadata"]["name"], ip, ",".join(cidrs))
    Console().print(table)


def _pod_ips(status: dict[str, Any]) -> str:
    """Every address of a pod (status.podIPs), or its podIP when that is all it has."""
    ips = [entry["ip"] for entry in status.get("podIPs") or [] if entry.get("ip")]
    return ",".join(ips) or status.get("podIP") or "-"


def print_matrix(matrix: dict[str, dict[str, bool]], title: str) -> None:
    """Sources down, destinations across; a green mark where the connection worked."""
    table = Table(title=f"probe {title}", header_style="bold")
    targets = sorted({t for row in matrix.values() for t in row})
    table.add_column("from \\ to")
    for target in targets:
        table.add_column(target, justify="center")
    for source in sorted(matrix):
        cells = ["[green]✓[/]" if matrix[source].get(t) else "[red]✗[/]" for t in targets]
        table.add_row(source, *cells)
    Console().print(table)
