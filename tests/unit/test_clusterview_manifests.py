"""The cluster view and the manifests agree: the CLI looks for the agent pods where the
DaemonSet makes them, by the labels it gives them, on the port the agent serves, and the
observer Role grants exactly what that takes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from podwire import clusterview
from podwire.agent.config import AgentConfig
from podwire.common.agentapi import OBSERVE_PORT
from podwire.lab import addons

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def deployed(kind: str) -> list[dict[str, Any]]:
    return [doc for path in sorted(DEPLOY.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] == kind]


def test_the_cli_finds_the_daemonsets_pods() -> None:
    (daemonset,) = deployed("DaemonSet")
    assert daemonset["metadata"]["namespace"] == clusterview.DEFAULT_NAMESPACE
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    wanted = dict(term.split("=") for term in clusterview.AGENT_SELECTOR.split(","))
    assert wanted.items() <= labels.items()
    assert addons.AGENT_LABELS == wanted  # the lab's agent pods carry the same
    assert daemonset["spec"]["template"]["spec"]["hostNetwork"] is True


def test_the_agent_serves_the_observe_api_on_loopback_by_default() -> None:
    config = AgentConfig(node_name="n")
    assert (config.observe_address, config.observe_port) == ("127.0.0.1", OBSERVE_PORT)


def test_the_shipped_config_serves_trace_through_the_cluster_view() -> None:
    (config_map,) = [c for c in deployed("ConfigMap") if c["metadata"]["name"] == "podwire-config"]
    settings = json.loads(config_map["data"]["agent.json"])
    assert settings["observe_trace"] is True is AgentConfig(node_name="n").observe_trace


def test_the_observer_role_grants_what_the_cluster_view_uses_and_no_more() -> None:
    (role,) = deployed("Role")
    assert role["metadata"]["namespace"] == clusterview.DEFAULT_NAMESPACE
    granted = {(resource, verb) for rule in role["rules"] for resource in rule["resources"]
               for verb in rule["verbs"] if rule["apiGroups"] == [""]}
    assert granted == {("pods", "get"), ("pods", "list"), ("pods/portforward", "get"),
                       ("pods/portforward", "create")}


def test_a_switch_that_is_not_a_boolean_is_named() -> None:
    with pytest.raises(TypeError, match="agent setting observe_trace must be true or false, "
                                         "not 'false'"):
        AgentConfig.from_dict({"node_name": "n", "observe_trace": "false"})
