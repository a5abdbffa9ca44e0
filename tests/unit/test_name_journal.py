"""Who a pod address was when an event happened (agent/namejournal.py), and the records
the agent makes when read name that pod, not the one that has the address now."""

from __future__ import annotations

import socket
import time

from podwire.agent import structs
from podwire.agent.desired import NodeState
from podwire.agent.flownames import ModelNames
from podwire.agent.flows import FlowEnricher, PeerNames
from podwire.agent.namejournal import NameJournal
from podwire.bpf.constants import Direction, EventType, Hook
from podwire.policy import Pod

A, B = PeerNames("x", "a", {"app": "a"}), PeerNames("x", "b", {"app": "b"})


def test_an_address_that_changed_hands_names_its_holder_at_the_time() -> None:
    journal = NameJournal()
    assert journal.at("10.0.0.5", 100) is None  # never changed: the model answers
    journal.departed("10.0.0.5", A, now_ns=1000)  # a had it since before the agent
    journal.arrived("10.0.0.5", now_ns=2000)
    assert journal.at("10.0.0.5", 500) == A
    assert journal.at("10.0.0.5", 1500) == PeerNames(None, None)  # nobody had it
    assert journal.at("10.0.0.5", 2500) is None  # the present holder
    journal.departed("10.0.0.5", B, now_ns=3000)
    assert journal.at("10.0.0.5", 2500) == B and journal.at("10.0.0.5", 500) == A
    assert journal.at("10.0.0.5", 3500) is None  # nobody now: the model says so


def test_the_journal_forgets_the_oldest_first() -> None:
    journal = NameJournal(size=2)
    for n, ip in enumerate(("10.0.0.1", "10.0.0.2", "10.0.0.3")):
        journal.departed(ip, A, now_ns=(n + 1) * 100)
        journal.arrived(ip, now_ns=(n + 1) * 100 + 50)
    assert journal.at("10.0.0.1", 50) == PeerNames(None, None)  # forgotten: no one
    assert journal.at("10.0.0.3", 250) == A


def pod(name: str, ip: str) -> Pod:
    return Pod.from_api({"metadata": {"name": name, "namespace": "x", "labels": {"app": name}},
                         "spec": {"nodeName": "n1"}, "status": {"podIP": ip}})


def test_a_record_read_after_the_pod_went_names_the_pod_of_the_event() -> None:
    state = NodeState("n1")
    state.set_pod(pod("old", "10.244.1.7"))
    names = ModelNames(state)
    enricher = FlowEnricher("n1", names.pod, lambda ref: None, lambda ip, d: [],
                            past=names.at)
    event = structs.FlowEvent(saddr=structs.ip_be("10.244.1.7"),
                              daddr=structs.ip_be("10.244.1.8"), sport=socket.htons(1),
                              dport=socket.htons(80), proto=6, type=EventType.FLOW,
                              direction=Direction.EGRESS, hook=Hook.FROM_POD)
    event.timestamp = time.monotonic_ns()
    state.remove_pod("x", "old")
    state.set_pod(pod("new", "10.244.1.7"))
    assert enricher.record(event)["source"]["pod"] == "old"
    event.timestamp = time.monotonic_ns()
    assert enricher.record(event)["source"]["pod"] == "new"
