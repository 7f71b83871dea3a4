"""Django's database sessions, each row knowing whose it is, reading only a session key of the kind
Django issues.

Deactivating someone deletes their sessions. An inactive user is not authenticated anyway, but
Django keeps the session, and reactivating them let the old cookie back in: whoever had copied it
(the reason to deactivate someone, often) too. Django's other way to end sessions, the session auth
hash, is derived from the password hash: deactivating would have to change the password, which a
local account must keep for when it is reactivated, and auth.User's hash cannot be made to include
anything else. Deleting the rows ends the sessions of every sign-in (GitHub, local) at once.

Django checks a session cookie's length alone, so a NUL in it reached PostgreSQL as a DataError on
the first page anyone opened with it: a 500 before sign-in. Any other key is no session at all.
"""

from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.sessions.backends import db
from django.contrib.sessions.backends.base import VALID_KEY_CHARS

from .models import Session


class SessionStore(db.SessionStore):
    @classmethod
    def get_model_class(cls):
        return Session

    def create_model_instance(self, data):
        session = super().create_model_instance(data)
        user_id = data.get(SESSION_KEY)
        session.user_id = None if user_id is None else get_user_model()._meta.pk.to_python(user_id)
        return session

    def _validate_session_key(self, key):
        return super()._validate_session_key(key) and all(character in VALID_KEY_CHARS for character in key)


def end_sessions_of_deactivated(sender, instance, **kwargs):
    """post_save of a user: saved inactive (in the admin, a shell, anywhere), their sessions end."""
    if not instance.is_active:
        Session.objects.filter(user=instance).delete()
