"""DORA for stakeholders, in a room of its own: the four keys (and rework) computed from recorded
deployments and incidents (`metrics`), the trend charts, the PagerDuty incident webhook, the page,
its exports and the API. It reads the releases app's models and writes only incidents.

Django app `releases.dora` (label `dora`), so its template tags load like any app's.
"""
