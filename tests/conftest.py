"""Shared by every test folder: `tests/` is on sys.path, so helpers here import by name."""
