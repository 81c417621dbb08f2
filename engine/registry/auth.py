"""Registry credentials and the challenge/response flows registries use.

The docker CLI sends credentials in ``X-Registry-Auth``: base64url JSON,
``e30=`` (``{}``) when the user is not logged in::

    {"username": "u", "password": "p", "serveraddress": "127.0.0.1:5000"}

A registry says how it wants them in the ``WWW-Authenticate`` header of a
401 to ``GET /v2/`` or any later call:

- ``Basic realm="..."``: send ``Authorization: Basic`` on every request;
- ``Bearer realm="https://auth/token",service="reg",scope="repository:x:pull"``:
  trade the credentials (or nothing, for anonymous pulls) for a token at the
  realm, per scope, and send ``Authorization: Bearer <token>``.

Tokens are cached per scope set until shortly before they expire.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from engine.errors import InvalidParameter
from engine.registry.client import (
    RegistryError,
    RegistryUnauthorized,
    Transport,
    error_text,
)

log = logging.getLogger(__name__)

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')
# Refresh a token this long before the registry would refuse it.
TOKEN_SLACK = 30.0


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""
    server_address: str = ""

    @property
    def empty(self) -> bool:
        return not (self.username or self.identity_token or self.registry_token)


def decode_auth_header(value: str | None) -> Credentials:
    """``X-Registry-Auth`` (base64url JSON, padding optional) as credentials.

    Raises InvalidParameter when the header is not base64 JSON, as dockerd does.
    """
    if not value or not value.strip():
        return Credentials()
    raw = value.strip()
    try:
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        doc = json.loads(decoded or b"{}")
    except (binascii.Error, ValueError) as err:
        raise InvalidParameter(f"invalid X-Registry-Auth header: {err}") from None
    if not isinstance(doc, dict):
        return Credentials()
    return credentials_from(doc)


def credentials_from(doc: dict[str, object]) -> Credentials:
    """The body of ``POST /auth`` or a decoded ``X-Registry-Auth``."""

    def text(*keys: str) -> str:
        for key in keys:
            value = doc.get(key)
            if isinstance(value, str) and value:
                return value
        return ""

    return Credentials(
        username=text("username", "Username"),
        password=text("password", "Password"),
        identity_token=text("identitytoken", "IdentityToken"),
        registry_token=text("registrytoken", "RegistryToken"),
        server_address=text("serveraddress", "ServerAddress"),
    )


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer", lower case
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """``WWW-Authenticate`` values; quoted values may hold commas (scopes do)."""
    challenges: list[Challenge] = []
    rest = header.strip()
    while rest:
        scheme, _, rest = rest.partition(" ")
        params: dict[str, str] = {}
        pos = 0
        while pos < len(rest):
            match = _PARAM.match(rest, pos)
            if not match:
                break
            value = match.group(2) if match.group(2) is not None else match.group(3)
            params[match.group(1).lower()] = value.replace('\\"', '"')
            pos = match.end()
            while pos < len(rest) and rest[pos] in ", ":
                pos += 1
            # The next word without "=" starts another challenge.
            if pos < len(rest) and not _PARAM.match(rest, pos):
                break
        challenges.append(Challenge(scheme.lower(), params))
        rest = rest[pos:].strip()
    return [c for c in challenges if c.scheme]


def basic_header(creds: Credentials) -> str:
    pair = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


@dataclass
class _Token:
    value: str
    expires: float


class Authorizer:
    """What to send a registry, learned from its challenges; thread-safe."""

    def __init__(self, transport: Transport, creds: Credentials, verify: bool) -> None:
        self.transport = transport
        self.creds = creds
        self.verify = verify
        self.challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._lock = threading.Lock()
        self._fetching = threading.Lock()

    def learn(self, header: str) -> None:
        """Remember the scheme a 401 asked for (Bearer preferred, as docker)."""
        challenges = parse_challenges(header)
        for scheme in ("bearer", "basic"):
            for challenge in challenges:
                if challenge.scheme == scheme:
                    self.challenge = challenge
                    return

    def headers(self, scopes: tuple[str, ...]) -> dict[str, str]:
        """The Authorization header for a request needing ``scopes``.

        Raises RegistryUnauthorized when the token server refuses.
        """
        challenge = self.challenge
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            if not self.creds.username:
                return {}
            return {"Authorization": basic_header(self.creds)}
        if self.creds.registry_token:
            return {"Authorization": f"Bearer {self.creds.registry_token}"}
        return {"Authorization": f"Bearer {self.token(scopes)}"}

    def forget(self, scopes: tuple[str, ...]) -> None:
        with self._lock:
            self._tokens.pop(tuple(sorted(scopes)), None)

    def token(self, scopes: tuple[str, ...]) -> str:
        key = tuple(sorted(scopes))
        # One fetch at a time: parallel layer uploads share the first token.
        with self._fetching:
            with self._lock:
                cached = self._tokens.get(key)
            if cached is not None and cached.expires > time.monotonic():
                return cached.value
            token = self._fetch_token(key)
            with self._lock:
                self._tokens[key] = token
            return token.value

    def _fetch_token(self, scopes: tuple[str, ...]) -> _Token:
        assert self.challenge is not None
        params = self.challenge.params
        realm = params.get("realm")
        if not realm:
            raise RegistryError("the registry's Bearer challenge has no realm")
        service = params.get("service", "")
        started = time.monotonic()
        if self.creds.identity_token:
            # OAuth2 refresh-token grant, what docker does with identity tokens.
            form = urlencode(
                {
                    "grant_type": "refresh_token",
                    "refresh_token": self.creds.identity_token,
                    "service": service,
                    "client_id": "dockyard",
                    "scope": " ".join(scopes),
                }
            ).encode()
            response = self.transport.request(
                "POST",
                realm,
                {"Content-Type": "application/x-www-form-urlencoded"},
                form,
                verify=self.verify,
            )
        else:
            query = [("service", service)] if service else []
            query += [("scope", scope) for scope in scopes]
            if self.creds.username:
                query += [("account", self.creds.username)]
            url = realm + ("&" if "?" in realm else "?") + urlencode(query)
            headers = {}
            if self.creds.username:
                headers["Authorization"] = basic_header(self.creds)
            response = self.transport.request("GET", url, headers, verify=self.verify)
        body = response.read()
        if response.status != 200:
            text = error_text(body, response.status, response.reason)
            log.debug("token server %s refused: %s %s", realm, response.status, text)
            if response.status == 401:
                raise RegistryUnauthorized(f"unauthorized: {text}")
            raise RegistryUnauthorized(f'Get "{realm}": {text}')
        try:
            doc = json.loads(body)
        except ValueError as err:
            raise RegistryError(
                f"token server {realm} answered no JSON: {err}"
            ) from None
        value = doc.get("token") or doc.get("access_token")
        if not value:
            raise RegistryError(f"token server {realm} answered no token")
        lifetime = float(doc.get("expires_in") or 60)
        log.debug(
            "token for %s from %s, %ss", " ".join(scopes) or "(none)", realm, lifetime
        )
        return _Token(str(value), started + max(lifetime - TOKEN_SLACK, lifetime / 2))
