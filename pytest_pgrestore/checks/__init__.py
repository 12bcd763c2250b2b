"""Checks: listing checks, expectations, corruption, hygiene, the read-only store evidence and the
assertion helpers drills use."""
