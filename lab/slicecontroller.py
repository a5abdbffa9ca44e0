"""The lab's EndpointSlice controller: a process, as kube-controller-manager's is.

Informers on Services, Pods and the slices it manages feed a set of namespaces to look
at again; one worker reconciles every Service of those namespaces with
`endpointslices.plan_service` and writes the difference. Before reconciling it waits
until its slice cache has seen its own last write, so a stale cache never makes it
create a slice twice. Once nothing is left to do it records the resourceVersion it has
acted on up to in its revision file, which `podwire lab apply` waits on.

Run: `python -m podwire.lab.slicecontroller --kubeconfig PATH --revision-file PATH`.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from podwire.agent.watch import EventType, Informer, WatchEvent, api_client
from podwire.lab import endpointslices as eps
from podwire.lab.revisionfile import write_revision

log = logging.getLogger("podwire.lab.slicecontroller")

RETRY_DELAY = 0.5
OWN_WRITE_WAIT = 5.0


class SliceController:
    """The informers, the namespaces to reconcile and the worker that does it."""

    def __init__(self, api: client.ApiClient, revision_file: Path | None = None) -> None:
        self.discovery: Any = client.DiscoveryV1Api(api)
        self.revision_file = revision_file
        self._cond = threading.Condition()
        self._dirty: set[str] = set()
        self._written = 0
        self._reported = 0
        self._stop = threading.Event()
        self.services = Informer(api, "Service", self._on_event)
        self.pods = Informer(api, "Pod", self._on_event)
        self.slices = Informer(api, "EndpointSlice", self._on_event,
                               label_selector=f"{eps.MANAGED_BY_LABEL}={eps.CONTROLLER_NAME}")
        self.informers = (self.services, self.pods, self.slices)

    def _on_event(self, event: WatchEvent) -> None:
        with self._cond:
            if event.type is not EventType.BOOKMARK:
                self._dirty.add(event.object["metadata"].get("namespace", ""))
            self._cond.notify_all()

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> threading.Thread:
        for informer in self.informers:
            informer.start()
        worker = threading.Thread(target=self.run, name="slices", daemon=True)
        worker.start()
        return worker

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for informer in self.informers:
            informer.stop()

    def revision(self) -> int:
        return min(i.last_resource_version for i in self.informers)

    # ---- the worker ----------------------------------------------------------------------

    def run(self) -> None:
        for informer in self.informers:
            while not informer.wait_synced(0.5):
                if self._stop.is_set():
                    return
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: bool(self._dirty) or self._stop.is_set()
                                    or self._idle_revision_moved(), timeout=1.0)
                dirty, self._dirty = self._dirty, set()
            if self._stop.is_set():
                return
            self._wait_own_writes()
            failed = {ns for ns in sorted(dirty) if not self.reconcile_namespace(ns)}
            if failed:
                with self._cond:
                    self._dirty |= failed
                self._stop.wait(RETRY_DELAY)
            else:
                self._report()

    def _idle_revision_moved(self) -> bool:
        """Bookmarks move the revision without work: report it when idle."""
        return self.revision_file is not None and self.revision() > self._reported

    def _report(self) -> None:
        with self._cond:
            if self._dirty:
                return
        revision = self.revision()
        if self.revision_file is not None and revision > self._reported:
            write_revision(self.revision_file, revision)
            self._reported = revision

    def _wait_own_writes(self) -> None:
        """The slice cache must hold this controller's last write before it is trusted
        (every event the informer hands over wakes this wait)."""
        with self._cond:
            self._cond.wait_for(lambda: self.slices.last_resource_version >= self._written
                                or self._stop.is_set(), timeout=OWN_WRITE_WAIT)

    def reconcile_namespace(self, namespace: str) -> bool:
        """Bring every Service of `namespace` and its slices in line; False on a failed write."""
        services = {(s["metadata"]["namespace"], s["metadata"]["name"]): s
                    for s in self.services.items()}
        pods = [p for p in self.pods.items() if p["metadata"].get("namespace") == namespace]
        slices = [s for s in self.slices.items() if s["metadata"]["namespace"] == namespace]
        plans = [eps.SlicePlan(delete=eps.orphaned(slices, services))]
        for (ns, name), service in sorted(services.items()):
            if ns != namespace:
                continue
            mine = [s for s in slices if eps.service_of(s) == name]
            plans.append(eps.plan_service(service, pods, mine))
        ok = True
        for plan in plans:
            ok = self._write(namespace, plan) and ok
        return ok

    def _write(self, namespace: str, plan: eps.SlicePlan) -> bool:
        try:
            for body in plan.create:
                self._note(self.discovery.create_namespaced_endpoint_slice(
                    namespace, body, _preload_content=False))
            for body in plan.update:
                self._note(self.discovery.replace_namespaced_endpoint_slice(
                    body["metadata"]["name"], namespace, body, _preload_content=False))
            for body in plan.delete:
                self._delete(namespace, body)
        except (ApiException, HTTPError) as err:
            # A conflict means the cache was behind; anything else, the server: retry.
            log.warning("event=write_failed namespace=%s error=%s", namespace,
                        getattr(err, "reason", err))
            return False
        for body in plan.create + plan.update:
            log.info("event=slice_written namespace=%s service=%s endpoints=%d", namespace,
                     eps.service_of(body), len(body.get("endpoints") or []))
        return True

    def _delete(self, namespace: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        try:
            self._note(self.discovery.delete_namespaced_endpoint_slice(
                meta["name"], namespace, _preload_content=False,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(
                    uid=meta.get("uid")))))
        except ApiException as err:
            if err.status != 404:
                raise
        log.info("event=slice_deleted namespace=%s slice=%s", namespace, meta["name"])

    def _note(self, response: Any) -> None:
        """Remember the RV of a write (a delete answers with a Status and no RV: its
        event comes with the next ones)."""
        body = json.loads(response.data)
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv and str(rv).isdigit():
            self._written = max(self._written, int(rv))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="podwire.lab.slicecontroller", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--revision-file", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    controller = SliceController(api_client(args.kubeconfig), args.revision_file)
    controller.start()
    log.info("event=controller_started")
    signal.sigwait(stop_signals)
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
