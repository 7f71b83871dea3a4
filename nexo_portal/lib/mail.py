"""E-mail to people, one message each, through Django's mail settings (EMAIL_URL), counted and
timed as outgoing calls (`nexo_outgoing_calls_total{target="email"}`) like the other remote services."""

from django.core.mail import send_mail

from . import metrics


def send_each(subject, body, addresses):
    """One message per address, so nobody learns another's address. An SMTP failure goes up to the
    caller (an RQ job, which retries) after it is counted."""
    for address in addresses:
        with metrics.outgoing_call("email", "send"):
            send_mail(subject, body, None, [address])
