"""Serving: loading a model safely, scoring recordings, reports, export and the hub."""
