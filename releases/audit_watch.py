"""The audit chain's periodic watch, with Slack: called every reconciler round, it verifies the chain
against its witness every AUDIT_VERIFY_SECONDS, alerts once when it breaks and checkpoints its head
when it holds (audit/checkpoints.py does the work; this adds the alert, which audit cannot import).
"""

from audit import checkpoints

from . import alerts


def watch_audit_chain(now=None):
    """The ChainVerification just saved, or None when the last one is recent enough."""
    return checkpoints.watch(alert=alerts.enqueue_audit_chain_alert, now=now)
