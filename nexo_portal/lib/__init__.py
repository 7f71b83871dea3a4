"""The bottom layer: plain helpers that every app may use (the job queue's Redis client, dates,
outgoing HTTP, refusals and the API's error body and scopes).

Nothing here imports an app or the rest of `nexo_portal`; tests/test_layers.py checks it.
"""
