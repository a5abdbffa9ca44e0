"""CNI protocol: environment validation, CNI_ARGS, error objects."""

from __future__ import annotations

import json

import pytest

from podwire.cni import shim
from podwire.cni.protocol import CniError, Code, error_json, parse_cni_args, parse_env
from podwire.cni.shim import SUPPORTED_VERSIONS

BASE = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0"}


def test_add_env_is_parsed_with_pod_identity() -> None:
    env = parse_env({**BASE, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;"
                     "K8S_POD_NAME=web;K8S_POD_UID=u-1;K8S_POD_INFRA_CONTAINER_ID=abc123"})
    assert (env.command, env.container_id, env.netns, env.ifname) == (
        "ADD", "abc123", "/run/netns/x", "eth0")
    assert (env.pod.namespace, env.pod.name, env.pod.uid) == ("ns", "web", "u-1")


@pytest.mark.parametrize("missing", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])
def test_add_needs_each_variable(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(CniError) as err:
        parse_env(env)
    assert err.value.code == Code.INVALID_ENV and missing in err.value.msg


def test_del_accepts_empty_netns() -> None:
    env = parse_env({**BASE, "CNI_COMMAND": "DEL", "CNI_NETNS": ""})
    assert env.netns == ""


@pytest.mark.parametrize("command", ["STATUS", "GC", "VERSION"])
def test_commands_without_container_need_no_container_env(command: str) -> None:
    assert parse_env({"CNI_COMMAND": command}).command == command


@pytest.mark.parametrize("env", [
    {**BASE, "CNI_COMMAND": "UP"},
    {**BASE, "CNI_CONTAINERID": "-bad"},
    {**BASE, "CNI_CONTAINERID": "a/b"},
    {**BASE, "CNI_IFNAME": "a" * 16},
    {**BASE, "CNI_IFNAME": "eth 0"},
    {**BASE, "CNI_IFNAME": "e/0"},
    {**BASE, "CNI_IFNAME": ".."},
    {**BASE, "CNI_NETNS": "relative/path"},
    {**BASE, "CNI_ARGS": "novalue"},
])
def test_invalid_env_is_code_4(env: dict[str, str]) -> None:
    with pytest.raises(CniError) as err:
        parse_env(env)
    assert err.value.code == Code.INVALID_ENV


def test_cni_args_empty_and_unknown_keys() -> None:
    assert parse_cni_args("") == parse_cni_args("FOO=bar")
    assert parse_cni_args("K8S_POD_NAME=a=b").name == "a=b"


def test_error_object_shape() -> None:
    body = json.loads(error_json("0.4.0", CniError(Code.TRY_AGAIN_LATER, "busy", "why")))
    assert body == {"cniVersion": "0.4.0", "code": 11, "msg": "busy", "details": "why"}
    unknown = json.loads(error_json("9.9.9", CniError(Code.DECODE_FAILURE, "bad")))
    assert unknown["cniVersion"] == SUPPORTED_VERSIONS[-1] and "details" not in unknown


def test_the_shims_errors_are_the_same_objects() -> None:
    """The shim and the agent render error objects with one function."""
    err = CniError(Code.TRY_AGAIN_LATER, "busy", "why")
    assert error_json("1.0.0", err) == shim.error_json("1.0.0", 11, "busy", "why")
    assert json.loads(shim.error_json(None, shim.CODE_INVALID_ENV, "x"))["cniVersion"] == (
        SUPPORTED_VERSIONS[-1])
