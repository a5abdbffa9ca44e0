"""Terminal output of `podwire policy`: reachability tables and previews (rich)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from podwire.policy.preview import VerdictChange
from podwire.policy.reachability import Table as Reachability


def print_reachability(table: Reachability, title: str, console: Console) -> None:
    """Sources down, destinations across; green where the evaluator allows."""
    grid = Table(title=title, header_style="bold")
    targets = sorted({t for row in table.values() for t in row})
    grid.add_column("from \\ to")
    for target in targets:
        grid.add_column(target, justify="center")
    for source in sorted(table):
        grid.add_row(source, *["[green]✓[/]" if table[source].get(t) else "[red]✗[/]"
                               for t in targets])
    console.print(grid)


def print_preview(changes: Sequence[VerdictChange], observed: int, console: Console) -> None:
    """The verdict changes, newly denied first, each with before/after reasons."""
    if not changes:
        console.print(f"No change: all {observed} observed connection(s) keep their verdict.")
        return
    grid = Table(title=f"{len(changes)} of {observed} observed connection(s) change verdict",
                 header_style="bold")
    for column in ("change", "connection", "seen", "now", "with the proposal"):
        grid.add_column(column)
    for change in changes:
        label = "[red]newly denied[/]" if change.newly_denied else "[green]newly allowed[/]"
        grid.add_row(label, change.flow.connection.describe(), str(change.flow.connections),
                     change.before.explain(), change.after.explain())
    console.print(grid)
