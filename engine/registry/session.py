"""One conversation with one registry about one repository.

A :class:`Session` knows the endpoint that answered (``https://`` or, for
insecure registries, ``http://``), the credentials and the scopes it works
under, and retries a request once when a 401 teaches it a new challenge::

    session = Session(transport, endpoint, authorizer, "library/busybox", "pull")
    response = session.request("GET", "/v2/library/busybox/manifests/latest")
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO

from engine.registry.auth import Authorizer
from engine.registry.client import RegistryUnauthorized, Response, Transport

log = logging.getLogger(__name__)

NO_BASIC_CREDENTIALS = "no basic auth credentials"


class NoBasicCredentials(RegistryUnauthorized):
    """A registry wants Basic auth and the client sent no login.

    The message is dockerd's pull error, ``Head "<url>": no basic auth
    credentials``; a push reports :data:`NO_BASIC_CREDENTIALS` alone.
    """


@dataclass(frozen=True)
class Endpoint:
    """Where a registry's API is served: ``https://host:port`` and how."""

    url: str
    verify: bool = True
    mirror: bool = False

    @property
    def netloc(self) -> str:
        return self.url.split("://", 1)[1]


class Session:
    def __init__(
        self,
        transport: Transport,
        endpoint: Endpoint,
        authorizer: Authorizer,
        repo: str,
        actions: str,
    ) -> None:
        self.transport = transport
        self.endpoint = endpoint
        self.authorizer = authorizer
        self.repo = repo
        self.scopes: tuple[str, ...] = (f"repository:{repo}:{actions}",)

    def url(self, path: str) -> str:
        return path if "://" in path else self.endpoint.url + path

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | IO[bytes] | Iterable[bytes] | None = None,
        scopes: tuple[str, ...] | None = None,
        follow: bool = True,
    ) -> Response:
        """Send with credentials; on a 401 learn the challenge and retry once.

        A streamed body cannot be sent twice: its 401 is returned as is.
        Raises RegistryUnauthorized when the token server refuses.
        """
        scopes = scopes or self.scopes
        replayable = body is None or isinstance(body, bytes)
        for attempt in (0, 1):
            sent = {**(headers or {}), **self.authorizer.headers(scopes)}
            response = self.transport.request(
                method,
                self.url(path),
                sent,
                body,
                verify=self.endpoint.verify,
                follow=follow,
            )
            if response.status == 401 and self._wants_basic_login(response):
                response.read()
                # Go's url.Error: the method as "Head", then the quoted URL.
                raise NoBasicCredentials(
                    f'{method[:1]}{method[1:].lower()} "{self.url(path)}": '
                    f"{NO_BASIC_CREDENTIALS}"
                )
            if response.status != 401 or attempt or not replayable:
                return response
            challenge = response.header("www-authenticate")
            if not challenge:
                return response
            had = self.authorizer.challenge
            self.authorizer.learn(challenge)
            self.authorizer.forget(scopes)
            if had is not None and had.scheme == "basic" and "Authorization" in sent:
                return response  # the password itself was refused
            response.read()
            log.debug(
                "%s %s: 401, retrying with %s auth",
                method,
                path,
                self.authorizer.challenge and self.authorizer.challenge.scheme,
            )
        raise AssertionError("unreachable")

    def _wants_basic_login(self, response: Response) -> bool:
        """True when a 401 asks for Basic auth and there is no username to send."""
        if self.authorizer.creds.username:
            return False
        challenge = response.header("www-authenticate")
        if challenge:
            self.authorizer.learn(challenge)
        known = self.authorizer.challenge
        return known is not None and known.scheme == "basic"
