"""Servers the tests talk to: stand-ins for Argo CD and health URLs that speak the real wire format,
and a real Prometheus."""
