"""The lab: a multi-node podwire cluster made of network namespaces on one machine.

`cluster` brings it up and down; `topology` wires the namespaces; `kubelet` stands in
for the kubelet, runtime and scheduler of every node; `workload` applies objects and
waits for the agents; `probe`/`probes` test connections; `cli` is `podwire lab`.
The API server stand-in is the package `api` (`python -m podwire.lab.api`).
"""
