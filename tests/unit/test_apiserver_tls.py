"""The lab API server over HTTPS: what an in-cluster client needs of it."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from podwire.agent.watch import api_client
from podwire.lab.api.server import LabApiServer

TOKEN = "s3cret-token"


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[LabApiServer, Path]]:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=lab", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    server = LabApiServer(token=TOKEN, tls_cert_file=cert, tls_key_file=key)
    server.add_listener("127.0.0.1", 0)
    server.start()
    try:
        yield server, cert
    finally:
        server.stop()


def test_kubeconfig_client_trusts_the_self_signed_certificate(
        https_server: tuple[LabApiServer, Path], tmp_path: Path) -> None:
    server, _ = https_server
    assert server.url.startswith("https://127.0.0.1:")
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": "tls"}})
    assert core.read_namespace("tls").metadata.name == "tls"


def test_in_cluster_client_with_the_service_account_files(
        https_server: tuple[LabApiServer, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server, cert = https_server
    port = server.url.rsplit(":", 1)[1]
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(cert.read_bytes())
    (account / "token").write_text(TOKEN)
    with api_client(None, account) as api:
        assert client.CoreV1Api(api).list_node().items == []
    (account / "token").write_text("wrong")
    with api_client(None, account) as api, pytest.raises(ApiException) as refused:
        client.CoreV1Api(api).list_node()
    assert refused.value.status == 401


def test_in_cluster_without_the_files_is_a_clear_error(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    with pytest.raises(ValueError, match="in-cluster service account.*token file does not"):
        api_client(None, tmp_path)


def test_plain_http_client_does_not_stop_the_server(
        https_server: tuple[LabApiServer, Path], tmp_path: Path) -> None:
    server, _ = https_server
    host, port = server.url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as plain:
        plain.sendall(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
        plain.recv(1024)  # the server closes or answers with a TLS alert
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    assert core.list_namespace().items == []
