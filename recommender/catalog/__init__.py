"""Catalog: load, validate and (later) store products."""
