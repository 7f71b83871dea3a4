"""Django's database sessions, reading only a session key of the kind Django issues.

Django checks a session cookie's length alone, so a NUL in it reached PostgreSQL as a DataError on
the first page anyone opened with it: a 500 before sign-in. Any other key is no session at all.
"""

from django.contrib.sessions.backends import db
from django.contrib.sessions.backends.base import VALID_KEY_CHARS


class SessionStore(db.SessionStore):
    def _validate_session_key(self, key):
        return super()._validate_session_key(key) and all(character in VALID_KEY_CHARS for character in key)
