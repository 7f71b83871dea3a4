"""Words the pages, the API, the audit log and the alerts share."""

from collections.abc import Iterable


def listed(words: Iterable[str]) -> str:
    """ "e2e, performance and security"; one word alone; at least one."""
    words = list(words)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
