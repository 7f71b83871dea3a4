"""The one base of every refusal a person or CI can be given, so each entry point answers it alike."""


class Refused(Exception):
    """A rule refused what someone asked; the message is written for the person who asked.

    `forbidden` tells "you may not do this" (HTTP 403) from "this cannot happen now" (HTTP 409:
    the state, a freeze, what is registered already). `field` names the input at fault when the
    refusal is about what was given, such as a rejection without a comment (HTTP 400).
    """

    def __init__(self, message, *, forbidden=False, field=None):
        super().__init__(message)
        self.forbidden = forbidden
        self.field = field


class Unavailable(Exception):
    """Something the portal needs cannot be reached now but may be in a moment (a Git remote, a
    lock in Redis): the pipeline tries the step again with backoff instead of failing it.

    `retry_after`: the seconds the other side asked us to wait (a rate limit's reset); the next try
    is not sooner than that, whatever the backoff says.
    """

    retry_after = None
