"""How far one place is behind another, in the words the board, the audit log and Slack share."""


def builds(count: int) -> str:
    """A count of builds: "1 build", "29 builds"."""
    return f"{count} build{'' if count == 1 else 's'}"


def builds_behind(count: int, place: str) -> str:
    """The sentence the board, the audit log and Slack share: "1 build behind develop"."""
    return f"{builds(count)} behind {place}"
