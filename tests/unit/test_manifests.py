"""The linter step for what installs podwire on a cluster: deploy/, vagrant/, shell scripts.

Every manifest validates against the Kubernetes schemas of the version the Vagrant lab
installs; the DaemonSet, RBAC and ConfigMap say what the design needs (least privilege,
host mounts, probes through the entrypoint, every taint tolerated); the Vagrantfile
passes `vagrant validate`; every shell script of the repository passes shellcheck.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from podwire.agent import install
from podwire.agent.config import AgentConfig
from podwire.policy import NetworkPolicy, admin

REPO = Path(__file__).resolve().parents[2]
DEPLOY, VAGRANT = REPO / "deploy", REPO / "vagrant"
MANIFESTS = sorted(DEPLOY.glob("*.yaml")) + sorted((VAGRANT / "samples").glob("*.yaml"))


def _k8s_version() -> str:
    """The Kubernetes minor the Vagrant lab installs (its default PODWIRE_K8S_MINOR)."""
    found = re.search(r'"PODWIRE_K8S_MINOR", "v(\d+\.\d+)"', (VAGRANT / "Vagrantfile").read_text())
    assert found, "the Vagrantfile names no default Kubernetes minor"
    return found.group(1)


K8S_VERSION = _k8s_version()


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def deployed(kind: str) -> list[dict[str, Any]]:
    return [doc for path in sorted(DEPLOY.glob("*.yaml")) for doc in documents(path)
            if doc["kind"] == kind]


def the(kind: str) -> dict[str, Any]:
    found = deployed(kind)
    assert len(found) == 1, f"deploy/ holds {len(found)} {kind} objects, want 1"
    return found[0]


def agent_container() -> dict[str, Any]:
    containers = the("DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["agent"]
    return dict(containers[0])


# ------------------------------------------------------------------ schemas


@pytest.mark.parametrize(
    ("path", "index"),
    [(p, i) for p in MANIFESTS for i in range(len(documents(p)))],
    ids=lambda v: v.name if isinstance(v, Path) else str(v))
def test_manifest_validates_against_the_kubernetes_schema(path: Path, index: int) -> None:
    doc = documents(path)[index]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {err.message} "
                    f"at {'.'.join(map(str, err.path))}")


def test_the_schema_check_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(the("DaemonSet"))
    broken["spec"]["template"]["spec"]["hostNetwrk"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_objects_are_applied_in_dependency_order() -> None:
    """`kubectl apply -f deploy/` goes by file name: the namespace before what lives in it."""
    kinds = [doc["kind"] for path in sorted(DEPLOY.glob("*.yaml")) for doc in documents(path)]
    assert kinds[0] == "Namespace"
    assert kinds.index("ServiceAccount") < kinds.index("DaemonSet")
    assert kinds.index("ConfigMap") < kinds.index("DaemonSet")
    namespace = the("Namespace")["metadata"]["name"]
    for doc in deployed("ServiceAccount") + deployed("ConfigMap") + deployed("DaemonSet"):
        assert doc["metadata"]["namespace"] == namespace


# ------------------------------------------------------------------ RBAC


def test_cluster_role_reads_exactly_what_the_agent_watches() -> None:
    granted = {(group, resource, verb) for rule in the("ClusterRole")["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}
    # The cluster policy kinds: their CRDs are deploy/05-network-policy-api.yaml.
    cluster_policies = [(admin.GROUP, spec.plural) for spec in admin.KINDS.values()]
    want = {(group, resource, verb)
            for group, resource in (("", "pods"), ("", "namespaces"), ("", "nodes"),
                                    ("networking.k8s.io", "networkpolicies"),
                                    *cluster_policies)
            for verb in ("get", "list", "watch")}
    assert granted == want


def test_role_is_bound_to_the_daemonsets_service_account() -> None:
    binding, account = the("ClusterRoleBinding"), the("ServiceAccount")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole",
                                  "name": the("ClusterRole")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount",
                                    "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    pod = the("DaemonSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


# ------------------------------------------------------------------ DaemonSet


def test_daemonset_runs_privileged_on_the_host_network_on_every_node() -> None:
    pod = the("DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert agent_container()["securityContext"]["privileged"] is True
    # Only a toleration with no key and operator Exists matches every taint.
    assert {"operator": "Exists"} in pod["tolerations"]


def test_daemonset_has_requests_and_limits() -> None:
    resources = agent_container()["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) == {"cpu", "memory"}, bound


def test_daemonset_mounts_what_the_agent_and_the_install_use() -> None:
    pod = the("DaemonSet")["spec"]["template"]["spec"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["mountPath"]: m for m in agent_container()["volumeMounts"]}
    by_host = {host_paths[m["name"]]: m for m in mounts.values() if m["name"] in host_paths}
    for host_path in ("/sys/fs/bpf", "/opt/cni/bin", "/etc/cni/net.d", "/run/netns",
                      "/run/podwire", "/var/lib/podwire", "/lib/modules", "/usr/src"):
        assert host_path in by_host, f"{host_path} is not mounted"
    # Pod namespaces and pins made on the host after the agent started must show inside.
    for host_path in ("/run/netns", "/sys/fs/bpf"):
        assert by_host[host_path]["mountPropagation"] == "HostToContainer"
    for host_path in ("/lib/modules", "/usr/src"):
        assert by_host[host_path].get("readOnly") is True
    configmap = the("ConfigMap")["metadata"]["name"]
    assert any(v.get("configMap", {}).get("name") == configmap for v in pod["volumes"])


def test_daemonset_args_are_the_entrypoints_and_fit_its_mounts() -> None:
    container = agent_container()
    assert container["command"][1:] == ["-m", "podwire.agent.install"]
    args = install._parser().parse_args(container["args"])
    assert args.command == "run" and args.uninstall_on_exit
    assert args.node_name == "$(NODE_NAME)"
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    for path in (args.config.parent, args.cni_bin_dir, args.cni_conf_dir):
        assert str(path) in mounts, f"{path} is not a mount of the container"


def test_probes_ask_the_agents_health_through_its_socket() -> None:
    container = agent_container()
    settings = json.loads(the("ConfigMap")["data"]["agent.json"])
    kinds = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[0] == container["command"][0]
        args = install._parser().parse_args(command[command.index("podwire.agent.install") + 1:])
        assert args.command == "probe"
        assert str(args.socket) == settings["socket_path"]
        kinds[probe] = args.kind
    # A starting agent (compiling, syncing) is alive but not ready; only readiness waits.
    assert kinds == {"startupProbe": "alive", "livenessProbe": "alive",
                     "readinessProbe": "ready"}


# ------------------------------------------------------------------ settings


def test_configmap_settings_make_an_agent_config() -> None:
    settings = json.loads(the("ConfigMap")["data"]["agent.json"])
    config = install.agent_config(settings, "node-a")
    assert config == AgentConfig.from_dict({**settings, "node_name": "node-a"})
    # The agent's in-cluster defaults are the ones a pod gets.
    assert config.kubeconfig is None
    assert str(config.service_account_dir) == "/var/run/secrets/kubernetes.io/serviceaccount"


def test_every_setting_in_the_configmap_is_documented() -> None:
    readme = (DEPLOY / "README.md").read_text()
    settings = json.loads(the("ConfigMap")["data"]["agent.json"])
    for name in ("pod_cidr", "mtu", "tunnel_mode", "history_size", "metrics_port"):
        assert name in settings, f"{name} is missing from the ConfigMap"
    for name in settings:
        assert f"`{name}`" in readme, f"{name} is not documented in deploy/README.md"


# ------------------------------------------------------------------ image


def test_image_copies_every_package_the_distribution_maps() -> None:
    containerfile = (DEPLOY / "Containerfile").read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    copied = set(re.findall(r"^COPY (\S+)/ \1/$", containerfile, re.MULTILINE))
    assert folders <= copied, f"not copied into the image: {sorted(folders - copied)}"
    assert "COPY pyproject.toml" in containerfile


# ------------------------------------------------------------------ samples


def test_sample_policies_are_accepted_by_podwires_parser() -> None:
    policies = [d for d in documents(VAGRANT / "samples" / "policies.yaml")
                if d["kind"] == "NetworkPolicy"]
    assert policies
    for doc in policies:
        assert NetworkPolicy.from_api(doc).key == (
            f"{doc['metadata']['namespace']}/{doc['metadata']['name']}")


# ------------------------------------------------------------------ Vagrant


def _vagrant_validate(directory: Path, scratch: Path) -> subprocess.CompletedProcess[str]:
    # Vagrant's state and home go to scratch, so the check leaves nothing behind.
    env = {**os.environ, "VAGRANT_HOME": str(scratch / "home"),
           "VAGRANT_DOTFILE_PATH": str(scratch / "dotfile"), "VAGRANT_CHECKPOINT_DISABLE": "1"}
    return subprocess.run(["vagrant", "validate"], cwd=directory, env=env, capture_output=True,
                          text=True, check=False, timeout=120)


def test_vagrantfile_passes_vagrant_validate(tmp_path: Path) -> None:
    result = _vagrant_validate(VAGRANT, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_vagrant_validate_catches_a_bad_setting(tmp_path: Path) -> None:
    copy_dir = tmp_path / "vagrant"
    shutil.copytree(VAGRANT, copy_dir, ignore=shutil.ignore_patterns(".vagrant"))
    vagrantfile = copy_dir / "Vagrantfile"
    vagrantfile.write_text(vagrantfile.read_text().replace("lv.memory =", "lv.memry =", 1))
    result = _vagrant_validate(copy_dir, tmp_path)
    assert result.returncode != 0
    assert "memry" in result.stdout + result.stderr


# ------------------------------------------------------------------ shell scripts


def shell_scripts() -> list[Path]:
    """Tracked files that are shell scripts: *.sh, or a shell shebang. cni/shim.py starts
    with a sh line too, but it is a Python program (a polyglot), so *.py is left out."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    found = []
    for name in filter(None, listed):
        path = REPO / name
        if not path.is_file() or path.resolve().suffix == ".py":
            continue
        with path.open("rb") as f:
            first = f.readline(200)
        if name.endswith(".sh") or re.match(rb"#!\s*\S*/(env\s+)?(ba|da)?sh\b", first):
            found.append(path)
    return found


def test_shell_scripts_are_found() -> None:
    names = {p.relative_to(REPO).as_posix() for p in shell_scripts()}
    assert {"scripts/setup.sh", "deploy/merge-kernel-headers.sh",
            "vagrant/provision/node.sh"} <= names


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_shell_script_passes_shellcheck(script: Path) -> None:
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
