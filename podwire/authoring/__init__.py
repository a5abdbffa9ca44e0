"""`podwire policy`: authoring NetworkPolicies (lint, explain, test, generate, preview)."""
