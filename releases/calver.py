"""CalVer versions as the platform team defines them: `YYYY.MM.BUILD[-METADATA]`.

BUILD starts at 1 each month and is never reused for a service; METADATA is a short
lowercase label (`hotfix-auth`, `a3f2b1c`). Versions order by (year, month, build).
"""

import re
from dataclasses import dataclass

MIN_YEAR = 2000
MAX_BUILD = 999_999
MAX_METADATA_LENGTH = 40
MAX_VERSION_LENGTH = len("2026.02.") + len(str(MAX_BUILD)) + 1 + MAX_METADATA_LENGTH

# [0-9], not \d: Python's \d and int() take the digits of every script (２０２６, ٢٠٢٦), which no URL,
# image tag or Git ref does.
_SHAPE = re.compile(r"^(?P<year>[0-9]{4})\.(?P<month>[0-9]{2})\.(?P<build>[0-9]+)(?:-(?P<metadata>.*))?$")
_METADATA = re.compile(r"^[0-9a-z][0-9a-z.-]*$")


class InvalidVersion(ValueError):
    """The text is not a CalVer version; the message says which part is wrong."""


@dataclass(frozen=True)
class CalVer:
    year: int
    month: int
    build: int
    metadata: str = ""

    @classmethod
    def parse(cls, text):
        if not isinstance(text, str) or not text:
            raise InvalidVersion("A version is required, in the form YYYY.MM.BUILD, e.g. 2026.02.1.")
        if len(text) > MAX_VERSION_LENGTH:
            raise InvalidVersion(f"'{text[:20]}…' is too long: a version has at most {MAX_VERSION_LENGTH} characters.")
        match = _SHAPE.fullmatch(text)
        if not match:
            raise InvalidVersion(
                f"'{text}' is not a CalVer version: use YYYY.MM.BUILD with an optional -metadata, e.g. 2026.02.1 "
                "or 2026.02.16-hotfix-auth."
            )
        year, month, build = int(match["year"]), int(match["month"]), match["build"]
        if year < MIN_YEAR:
            raise InvalidVersion(f"'{text}': the year must be {MIN_YEAR} or later.")
        if not 1 <= month <= 12:
            raise InvalidVersion(f"'{text}': the month must be 01 to 12.")
        if build.startswith("0"):
            raise InvalidVersion(f"'{text}': the build number starts at 1 and has no leading zeros.")
        if int(build) > MAX_BUILD:
            raise InvalidVersion(f"'{text}': the build number must be at most {MAX_BUILD}.")
        metadata = match["metadata"]
        if metadata is not None:
            if not metadata:
                raise InvalidVersion(f"'{text}': the metadata after '-' is empty.")
            if len(metadata) > MAX_METADATA_LENGTH:
                raise InvalidVersion(f"'{text}': the metadata has at most {MAX_METADATA_LENGTH} characters.")
            if not _METADATA.fullmatch(metadata):
                raise InvalidVersion(
                    f"'{text}': the metadata may use lowercase letters, digits, '.' and '-', "
                    "and starts with a letter or digit."
                )
        return cls(year, month, int(build), metadata or "")

    def __str__(self):
        base = f"{self.year}.{self.month:02d}.{self.build}"
        return f"{base}-{self.metadata}" if self.metadata else base

    @property
    def sort_key(self):
        return (self.year, self.month, self.build)

    def __lt__(self, other):
        return self.sort_key < other.sort_key

    def __le__(self, other):
        return self.sort_key <= other.sort_key

    def __gt__(self, other):
        return self.sort_key > other.sort_key

    def __ge__(self, other):
        return self.sort_key >= other.sort_key

    def tags(self, commit_sha):
        """The image tags CI pushes for this version: version, version-shortsha, sha-shortsha."""
        short_sha = commit_sha[:7]
        return [str(self), f"{self}-{short_sha}", f"sha-{short_sha}"]


class PathConverter:
    """`<version:version>` in a URL: only the shape of a version matches, so a path with anything else
    there (a NUL, a line break) is a 404 before any query, and the schema shows the pattern."""

    regex = r"[0-9]{4}\.[0-9]{2}\.[0-9]{1,6}(?:-[0-9a-z][0-9a-z.-]{0,39})?"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


def parse(text):
    return CalVer.parse(text)


def is_valid(text):
    try:
        CalVer.parse(text)
    except InvalidVersion:
        return False
    return True
