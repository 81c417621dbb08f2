"""Image references: the names users type, normalised the way docker does.

A reference names a repository and, optionally, a tag or a manifest digest.
Short names are completed with the default registry and the ``library/``
namespace, and shortened again for display::

    >>> ref = parse("nginx")
    >>> str(ref), ref.familiar
    ('docker.io/library/nginx:latest', 'nginx:latest')
    >>> parse("localhost:5000/x@sha256:" + "a" * 64).domain
    'localhost:5000'

The first path component is a registry host when it holds a ``.`` or a
``:`` or is ``localhost`` (or has upper-case letters, which a repository
path may not); otherwise the image lives on Docker Hub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import InvalidParameter

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_NAMESPACE = "library"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"^(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(
    r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$"
)
_ID = re.compile(r"^[a-f0-9]{64}$")


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference.

    ``tag`` and ``digest`` may both be empty (a bare repository), or both set
    (``name:tag@digest``, where the digest wins when resolving).
    """

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        """``docker.io/library/nginx``: the fully qualified repository."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """``nginx`` or ``localhost:5000/app``: the repository as docker prints it."""
        if self.domain != DEFAULT_DOMAIN:
            return self.repository
        prefix = OFFICIAL_NAMESPACE + "/"
        if self.path.startswith(prefix) and "/" not in self.path[len(prefix) :]:
            return self.path[len(prefix) :]
        return self.path

    @property
    def familiar(self) -> str:
        """The whole reference in display form: ``nginx:latest``."""
        return self._suffixed(self.familiar_name)

    @property
    def remote_name(self) -> str:
        """The repository path as a registry's API wants it (``library/nginx``)."""
        return self.path

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, "")

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, "", digest)

    def name_only(self) -> Reference:
        return Reference(self.domain, self.path)

    def _suffixed(self, name: str) -> str:
        if self.tag:
            name += f":{self.tag}"
        if self.digest:
            name += f"@{self.digest}"
        return name

    def __str__(self) -> str:
        return self._suffixed(self.repository)


def parse(ref: str, default_tag: str | None = DEFAULT_TAG) -> Reference:
    """Parse and normalise ``ref``; a bare name gets ``default_tag``.

    Raises InvalidParameter ("invalid reference format...") for text that is
    not a reference, including a 64-hex string (that is an image id).
    """
    if not ref or ref != ref.strip():
        raise InvalidParameter("invalid reference format")
    remainder, _, digest = ref.partition("@")
    if digest and not _DIGEST.match(digest):
        raise InvalidParameter("invalid reference format")

    # A tag follows the last ":" only when no "/" comes after it, so that
    # "localhost:5000/app" keeps its port.
    tag = ""
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidParameter("invalid reference format")

    domain, path = _split_domain(remainder)
    if len(remainder) > NAME_MAX:
        raise InvalidParameter(
            f"invalid reference format: repository name must not be more than {NAME_MAX} characters"
        )
    if not _PATH.match(path):
        if _PATH.match(path.lower()):
            raise InvalidParameter(
                f"invalid reference format: repository name ({path}) must be lowercase"
            )
        raise InvalidParameter("invalid reference format")
    if domain != DEFAULT_DOMAIN and not _DOMAIN.match(domain):
        raise InvalidParameter("invalid reference format")
    if _ID.match(remainder) and domain == DEFAULT_DOMAIN and not tag and not digest:
        raise InvalidParameter(
            f"invalid repository name ({remainder}), cannot specify 64-byte hexadecimal strings"
        )
    if not tag and not digest and default_tag:
        tag = default_tag
    return Reference(domain, path, tag, digest.lower() if digest else "")


def parse_repo_tag(repo: str, tag: str | None) -> Reference:
    """Join the ``repo`` and ``tag`` query arguments of tag, commit and import.

    ``repo`` may carry its own tag (``docker import x app:1`` sends it so);
    a ``tag`` argument as well is an error, as in dockerd.
    """
    base = parse(repo, default_tag=None)
    if not tag:
        return base if (base.tag or base.digest) else base.with_tag(DEFAULT_TAG)
    if base.tag or base.digest:
        raise InvalidParameter("invalid reference format")
    if not _TAG.match(tag):
        raise InvalidParameter(f"invalid tag format: {tag}")
    return base.with_tag(tag)


def is_image_id(text: str) -> bool:
    """True for ``sha256:<64 hex>`` or a bare 64-hex id."""
    hex_part = text[7:] if text.startswith("sha256:") else text
    return bool(_ID.match(hex_part))


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and (
        "." in first or ":" in first or first == "localhost" or first != first.lower()
    ):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"{OFFICIAL_NAMESPACE}/{path}"
    return domain, path
