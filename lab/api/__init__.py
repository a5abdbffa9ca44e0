"""The lab's Kubernetes API server: the real wire protocol over HTTP, on an in-memory store.

The PyPI `kubernetes` client, kubectl and the agents' watches run against it unmodified.
One concept a module, from the wire inwards:

- `server`: `LabApiServer`, listeners, TLS, persistence, fault injection; `__main__` runs it.
- `handler`: one HTTP request: authorisation, routing, verbs, errors as `Status`.
- `watchstream`: one watch connection's chunked body and its bookmarks.
- `sockets`: listening sockets, also inside lab network namespaces.
- `routes`, `discovery`: resource URLs; the discovery documents clients read.
- `kinds`: the served kinds, each declared once (`resource.ResourceType`) with its rules.
- `store`: objects, the resourceVersion, writes; `watch`: events, history, subscriptions.
- `validation`, `patch`, `selectors`, `errors`, `encoding`: the pieces requests share.
"""
