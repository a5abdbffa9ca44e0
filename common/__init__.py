"""The layer below agent/, cni/, lab/ and the CLI: small kernel-facing and wire-level
pieces each of them needs (entering a network namespace, reaching an agent, the flow
record, its filter and its rendering). It imports only policy/ and bpf/, the two
packages that import nothing of ours."""
