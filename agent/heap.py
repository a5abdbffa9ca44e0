"""The agent's heap after its first full sync: kept out of the cyclic collector's way.

The model of a large cluster is millions of small objects, nearly all alive for the
agent's lifetime. Python's collector walks every object of its oldest generation on a
full collection, and a change that leaves thousands of new entries behind triggers one
every change or two: 60-150 ms spent in the middle of a change to enforced, at 10,000
pods, rereading a model that has not died. Freezing the heap once it is built moves
those objects where the collector no longer looks (gc.freeze); what is made afterwards
is collected as before. The price: a reference cycle among the frozen objects is freed
only if it is broken (reference counting still frees everything else).
"""

from __future__ import annotations

import gc


def settle() -> int:
    """Collect what the start-up left behind, then freeze the rest; returns how many
    objects are now frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
