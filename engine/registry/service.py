"""Distribution API v2: pull, push and login, as dockerd speaks to registries.

The service picks where to talk (``daemon.registry``)::

    docker.io/library/busybox  -> mirrors first, then https://registry-1.docker.io
    registry.example:5000/app  -> https:// with the system CAs + certs.d
    127.0.0.1:5000/app         -> insecure: https:// unverified, then http://

Loopback addresses and ``localhost`` are insecure registries without being
configured, as in dockerd (``InsecureRegistryCIDRs: [127.0.0.0/8]``).
The endpoint that answered ``GET /v2/`` is remembered per host, so only the
first contact pays for the failed TLS handshake of a plain HTTP registry.

``pull`` and ``push`` are async iterators of progress messages
(:mod:`engine.registry.progress`); they raise before their first message
when the name cannot be resolved (404 "manifest unknown"), so the API can
still answer with a status code.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from engine.component import Component
from engine.errors import EngineError, Unauthorized
from engine.images.reference import DEFAULT_DOMAIN, Reference, parse, parse_repo_tag
from engine.registry.auth import (
    Authorizer,
    Credentials,
    credentials_from,
    decode_auth_header,
)
from engine.registry.client import (
    RegistryError,
    RegistryNotFound,
    RegistryUnauthorized,
    Transport,
)
from engine.registry.metadata import Metadata
from engine.registry.progress import Message, status
from engine.registry.pull import (
    ACCEPT,
    INDEXES,
    Platform,
    Puller,
    digest_of,
    host_platform,
    parse_platform,
    stream,
)
from engine.registry.push import Pusher
from engine.registry.session import Endpoint, Session

log = logging.getLogger(__name__)

HUB_ENDPOINT = "https://registry-1.docker.io"
HUB_INDEX = "https://index.docker.io/v1/"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
CONNECT_ERRORS = (OSError, ssl.SSLError, http.client.HTTPException)


class RegistryService(Component):
    """``daemon.registry``: endpoints, credentials and the pull/push/login flows."""

    def __init__(self, daemon: Any) -> None:
        super().__init__(daemon)
        self.root = self.config.data_root / "distribution"
        self.transport = Transport(self.config.certs_dir)
        self.metadata: Metadata | None = None
        self.platform: Platform = host_platform()
        self._working: dict[str, Endpoint] = {}
        self._insecure_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._insecure_names: set[str] = set()
        for entry in self.config.insecure_registries:
            try:
                self._insecure_nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._insecure_names.add(_host_of(entry))

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.metadata = Metadata(self.root)
        self.metadata.clean()

    async def stop(self) -> None:
        self.transport.close()

    # -- configuration --

    def is_insecure(self, netloc: str) -> bool:
        """Loopback, ``localhost`` and configured registries (names or CIDRs)."""
        if netloc in self._insecure_names:
            return True
        hostname = urlsplit(f"//{netloc}").hostname or netloc
        if hostname == "localhost" or hostname in self._insecure_names:
            return True
        try:
            address = ipaddress.ip_address(hostname)
        except ValueError:
            return False
        return address.is_loopback or any(address in net for net in self._insecure_nets)

    def endpoints(self, domain: str) -> list[Endpoint]:
        if domain == DEFAULT_DOMAIN:
            found = []
            for mirror in self.config.registry_mirrors:
                url = mirror.rstrip("/")
                if "://" not in url:
                    url = f"https://{url}"
                netloc = urlsplit(url).netloc
                found.append(
                    Endpoint(url, verify=not self.is_insecure(netloc), mirror=True)
                )
            return [*found, Endpoint(HUB_ENDPOINT)]
        if self.is_insecure(domain):
            return [
                Endpoint(f"https://{domain}", verify=False),
                Endpoint(f"http://{domain}"),
            ]
        return [Endpoint(f"https://{domain}")]

    def registry_config(self) -> dict[str, Any]:
        """``RegistryConfig`` of ``GET /info``."""
        cidrs = ["127.0.0.0/8", *(str(n) for n in self._insecure_nets if n != LOOPBACK)]
        configs: dict[str, Any] = {
            "docker.io": {
                "Name": "docker.io",
                "Mirrors": list(self.config.registry_mirrors),
                "Secure": True,
                "Official": True,
            }
        }
        for name in sorted(self._insecure_names):
            configs[name] = {
                "Name": name,
                "Mirrors": [],
                "Secure": False,
                "Official": False,
            }
        return {
            "AllowNondistributableArtifactsCIDRs": None,
            "AllowNondistributableArtifactsHostnames": None,
            "InsecureRegistryCIDRs": cidrs,
            "IndexConfigs": configs,
            "Mirrors": list(self.config.registry_mirrors),
        }

    # -- connecting --

    def _ping(self, endpoint: Endpoint, creds: Credentials) -> Authorizer:
        """``GET /v2/``: is this endpoint there, and how does it want auth?

        Raises the connection error (OSError, SSLError) when it is not.
        """
        response = self.transport.request(
            "GET", endpoint.url + "/v2/", verify=endpoint.verify
        )
        response.read()
        authorizer = Authorizer(self.transport, creds, endpoint.verify)
        if response.status == 401:
            authorizer.learn(response.header("www-authenticate"))
        return authorizer

    def candidates(self, domain: str, mirrors: bool) -> list[Endpoint]:
        """Endpoints to try in order: mirrors (pulls only), the one that worked."""
        found = [e for e in self.endpoints(domain) if mirrors or not e.mirror]
        remembered = self._working.get(domain)
        if remembered in found and remembered is not None:
            found.remove(remembered)
            first = next((i for i, e in enumerate(found) if not e.mirror), len(found))
            found.insert(first, remembered)
        return found

    def ping(self, domain: str, endpoint: Endpoint, creds: Credentials) -> Authorizer:
        """``GET /v2/``: is this endpoint there, and how does it want auth?

        Raises the connection error (OSError, SSLError) when it is not.
        """
        response = self.transport.request(
            "GET", endpoint.url + "/v2/", verify=endpoint.verify
        )
        response.read()
        authorizer = Authorizer(self.transport, creds, endpoint.verify)
        if response.status == 401:
            authorizer.learn(response.header("www-authenticate"))
        if not endpoint.mirror:
            self._working[domain] = endpoint
        return authorizer

    def connect(self, domain: str, creds: Credentials) -> tuple[Endpoint, Authorizer]:
        """The registry's own endpoint that answers (https, else http if insecure).

        Raises RegistryError with docker's connection error text.
        """
        last: BaseException | None = None
        candidates = self.candidates(domain, mirrors=False)
        for endpoint in candidates:
            try:
                return endpoint, self.ping(domain, endpoint, creds)
            except CONNECT_ERRORS as err:
                log.debug("registry endpoint %s: %s", endpoint.url, err)
                last = err
        url = candidates[-1].url + "/v2/"
        raise RegistryError(f'Get "{url}": {_connection_text(last, domain)}')

    def _credentials(self, auth_header: str | None) -> Credentials:
        return decode_auth_header(auth_header)

    # -- pull --

    async def pull(
        self,
        ref: str,
        tag: str | None,
        auth_header: str | None,
        platform: str | None,
    ) -> AsyncIterator[Message]:
        """Pull ``ref`` (with ``tag``: a tag or a digest) into the image store.

        Raises before the first message: InvalidParameter (bad name or
        platform), RegistryNotFound (404: manifest unknown, no platform),
        RegistryUnauthorized and RegistryError (500).
        """
        reference = _pull_reference(ref, tag)
        creds = self._credentials(auth_header)
        want = parse_platform(platform) or self.platform
        assert self.metadata is not None
        store = self.daemon.images
        puller = None
        resolved = None
        error: EngineError | None = None
        for endpoint in self.candidates(reference.domain, mirrors=True):
            candidate = None
            try:
                authorizer = await asyncio.to_thread(
                    self.ping, reference.domain, endpoint, creds
                )
                session = Session(
                    self.transport, endpoint, authorizer, reference.remote_name, "pull"
                )
                candidate = Puller(
                    store, self.metadata, session, reference, want, reference.repository
                )
                resolved = await asyncio.to_thread(candidate.resolve)
            except CONNECT_ERRORS as err:
                url = f"{endpoint.url}/v2/"
                text = _connection_text(err, endpoint.netloc)
                error = RegistryError(f'Get "{url}": {text}')
                if endpoint.mirror or endpoint.url.startswith("https://"):
                    continue  # the next: another mirror, or http:// if insecure
                break
            except EngineError as err:
                error = err
                if endpoint.mirror:
                    log.info(
                        "mirror %s failed for %s: %s",
                        endpoint.url,
                        reference,
                        err.message,
                    )
                    continue
                break
            puller = candidate
            break
        if puller is None or resolved is None:
            assert error is not None
            raise error

        pinned = resolved.pinned
        yield status(f"Pulling from {reference.path}", reference.tag or pinned)
        try:
            async for message in stream(lambda channel: puller.run(resolved, channel)):
                yield message
        except CONNECT_ERRORS as err:
            raise RegistryError(
                f"pulling {reference.familiar}: {_connection_text(err)}"
            ) from err

    # -- push --

    async def push(
        self, name: str, tag: str | None, auth_header: str | None
    ) -> AsyncIterator[Message]:
        """Push ``name:tag`` (every tag of ``name`` when tag is empty).

        Raises NotFound ("tag does not exist"), RegistryUnauthorized,
        RegistryError.
        """
        creds = self._credentials(auth_header)
        refs = await asyncio.to_thread(self._push_refs, name, tag)
        if not refs:
            raise RegistryNotFound(
                f"An image does not exist locally with the tag: {name}"
            )
        assert self.metadata is not None
        for reference in refs:
            endpoint, authorizer = await asyncio.to_thread(
                self.connect, reference.domain, creds
            )
            session = Session(
                self.transport, endpoint, authorizer, reference.remote_name, "pull,push"
            )
            pusher = Pusher(
                self.daemon.images, self.metadata, session, reference, reference.domain
            )
            try:
                async for message in stream(pusher.run):
                    yield message
            except CONNECT_ERRORS as err:
                raise RegistryError(
                    f"pushing {reference.familiar}: {_connection_text(err)}"
                ) from err

    def _push_refs(self, name: str, tag: str | None) -> list[Reference]:
        if tag:
            return [parse_repo_tag(name, tag)]
        base = parse(name, default_tag=None)
        if base.tag or base.digest:
            return [base]
        refs = []
        for image in self.daemon.images.list_images():
            for repo_tag in image.repo_tags or []:
                candidate = parse(repo_tag)
                if candidate.name_only() == base:
                    refs.append(candidate)
        return sorted(refs, key=str)

    # -- login --

    async def login(self, auth: dict[str, Any]) -> dict[str, Any]:
        """``POST /auth``: check credentials against the registry's ``/v2/``.

        Raises Unauthorized (401) with the registry's refusal.
        """
        creds = credentials_from(auth)
        return await asyncio.to_thread(self._login, creds)

    def _login(self, creds: Credentials) -> dict[str, Any]:
        domain = _login_domain(creds.server_address)
        endpoint, authorizer = self.connect(domain, creds)
        url = endpoint.url + "/v2/"
        if authorizer.challenge is None:
            log.info("login to %s: the registry asks for no credentials", domain)
            return {"Status": "Login Succeeded", "IdentityToken": ""}
        try:
            headers = authorizer.headers(())
        except RegistryUnauthorized as err:
            raise Unauthorized(f'Get "{url}": {err.message}') from None
        if not headers:
            raise Unauthorized(f"login attempt to {url} failed: no credentials given")
        response = self.transport.request("GET", url, headers, verify=endpoint.verify)
        body = response.read()
        if response.status != 200:
            log.info("login to %s refused: %s", domain, body[:200])
            raise Unauthorized(
                f"login attempt to {url} failed with status: {response.status} {response.reason}"
            )
        log.info("login to %s as %s succeeded", domain, creds.username)
        return {"Status": "Login Succeeded", "IdentityToken": ""}

    # -- distribution inspect --

    async def inspect(self, name: str, auth_header: str | None) -> dict[str, Any]:
        """``GET /distribution/{name}/json``: descriptor and platforms."""
        reference = _pull_reference(name, None)
        creds = self._credentials(auth_header)
        return await asyncio.to_thread(self._inspect, reference, creds)

    def _inspect(self, reference: Reference, creds: Credentials) -> dict[str, Any]:
        endpoint, authorizer = self.connect(reference.domain, creds)
        session = Session(
            self.transport, endpoint, authorizer, reference.remote_name, "pull"
        )
        target = reference.digest or reference.tag or "latest"
        response = session.request(
            "GET", f"/v2/{reference.remote_name}/manifests/{target}", {"Accept": ACCEPT}
        )
        if response.status == 401:
            raise Unauthorized(response.error().message)
        if response.status != 200:
            raise response.error(f"manifest for {reference.familiar}")
        body = response.read()
        doc = json.loads(body)
        media_type = (
            doc.get("mediaType") or response.header("content-type").split(";")[0]
        )
        platforms: list[dict[str, Any]] = []
        if media_type in INDEXES:
            for entry in doc.get("manifests") or []:
                plat = entry.get("platform")
                if plat and plat.get("os") != "unknown":
                    platforms.append(plat)
        else:
            config = session.request(
                "GET", f"/v2/{reference.remote_name}/blobs/{doc['config']['digest']}"
            )
            if config.status == 200:
                cfg = json.loads(config.read())
                plat = {
                    "architecture": cfg.get("architecture", ""),
                    "os": cfg.get("os", ""),
                }
                if cfg.get("variant"):
                    plat["variant"] = cfg["variant"]
                platforms.append(plat)
            else:
                config.close()
        return {
            "Descriptor": {
                "mediaType": media_type,
                "digest": digest_of(body),
                "size": len(body),
            },
            "Platforms": platforms,
        }


def _pull_reference(ref: str, tag: str | None) -> Reference:
    base = parse(ref, default_tag=None)
    if tag:
        if tag.startswith("sha256:"):
            return base.with_digest(tag)
        return parse_repo_tag(ref, tag)
    if base.tag or base.digest:
        return base
    return base.with_tag("latest")


def _login_domain(server: str) -> str:
    if not server or server.rstrip("/") in (
        HUB_INDEX.rstrip("/"),
        "docker.io",
        "index.docker.io",
    ):
        return DEFAULT_DOMAIN
    host = server.split("://", 1)[-1].split("/", 1)[0]
    return (
        DEFAULT_DOMAIN if host in ("index.docker.io", "registry-1.docker.io") else host
    )


def _host_of(entry: str) -> str:
    return entry.split("://", 1)[-1].split("/", 1)[0]


def _connection_text(err: BaseException | None, netloc: str = "") -> str:
    if err is None:
        return "no endpoint answered"
    if isinstance(err, ConnectionRefusedError):
        return f"dial tcp {netloc}: connect: connection refused"
    return str(err) or type(err).__name__
