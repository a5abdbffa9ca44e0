"""The layer below agent/, cni/, lab/ and the CLI: small kernel-facing and wire-level
pieces each of them needs (entering a network namespace, reaching an agent, the flow
record and its rendering). It imports none of the packages above it."""
