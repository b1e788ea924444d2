"""HTTP to an OCI distribution registry, for the OCI store: one session, timeouts and
bounded retries on every request, the auth dance (anonymous first, then the Bearer
or Basic challenge of a 401) with the login from the docker config (its credential
helpers too), and failures as one-line OSErrors that name the registry and never a
credential or a token."""

from __future__ import annotations

import base64
import ipaddress
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import docker.auth
import docker.errors
import requests

from ci_integration.store import retry

log = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS = 60.0  # the longest wait for a byte; retry.TIMEOUT_ENV sets it
INSECURE_ENV = "CI_INTEGRATION_REGISTRY_INSECURE"
# Packer threads upload side by side; urllib3 warns when its pool runs short.
POOL_CONNECTIONS = 32

_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')
# Docker Hub's logins are kept under its old index URL.
_HOST_ALIASES = {"index.docker.io": "docker.io", "registry-1.docker.io": "docker.io"}


def plain_http(host: str, env: Mapping[str, str]) -> bool:
    """Loopback registries speak plain HTTP, as the Docker engine assumes."""
    if env.get(INSECURE_ENV) == "1":
        return True
    name = urllib.parse.urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def docker_config_path(env: Mapping[str, str]) -> Path | None:
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return Path(env["HOME"]) / ".docker" / "config.json" if env.get("HOME") else None


def docker_login(host: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(user, password) that ``docker login HOST`` saved, read as docker-py reads the
    docker config: ``auths``, or the credential helper it names for the host
    (``credHelpers``, ``credsStore``), run with the job's environment (docker-py
    finds the helper on this process's PATH)."""
    path = docker_config_path(env)
    if path is None or not path.is_file():
        return None
    job_env = dict(env)
    try:
        config = docker.auth.load_config(str(path), credstore_env=job_env)
        # Hosts compared as the registry compares them: case and scheme aside.
        config["auths"] = {_registry_host(name): item for name, item in config.auths.items()}
        found = docker.auth.resolve_authconfig(
            config, registry=_registry_host(host), credstore_env=job_env
        )
    except (docker.errors.DockerException, OSError, ValueError, KeyError, TypeError) as exc:
        # No usable config: anonymous, and a 401 says where the login was looked for.
        log.debug("no login for %s from %s: %s", host, path, type(exc).__name__)
        return None
    if not found:
        return None
    fields = {name.lower(): value for name, value in found.items()}
    user, password = fields.get("username"), fields.get("password")
    return (str(user), str(password)) if user and password else None


def _registry_host(name: str) -> str:
    host = re.sub(r"^[a-z]+://", "", name.strip().lower()).split("/")[0]
    return _HOST_ALIASES.get(host, host)


class RegistryClient:
    def __init__(self, host: str, env: Mapping[str, str], where: str) -> None:
        self.host, self.where = host, where
        self.base = f"{'http' if plain_http(host, env) else 'https'}://{host}"
        self.timeout = retry.timeouts(env, READ_TIMEOUT_SECONDS)
        self._config = docker_config_path(env)
        self._login = docker_login(host, env)
        self._session = retry.session(env, pool_connections=POOL_CONNECTIONS)
        self._authorization: str | None = None
        self._scopes: dict[str, set[str]] = {}  # token scopes asked for: resource -> actions
        self._auth_lock = threading.Lock()
        # Once a request has used up its attempts, later ones fail at once: a save of
        # many blobs costs one request's retries, not one a blob.
        self._gave_up = ""

    def request(
        self,
        method: str,
        url: str,
        what: str,
        *,
        expect: Collection[int],
        absent: Collection[int] = (404,),
        transient_codes: Collection[str] = (),
        **kwargs: Any,
    ) -> requests.Response | None:
        """The response if its status is in ``expect``, None if in ``absent``; any other
        answer raises a one-line OSError. ``transient_codes``: registry error codes
        (DIGEST_INVALID...) that, for this request, are worth another attempt."""
        response, attempts = self._send(method, url, what, transient_codes, **kwargs)
        if response.status_code in expect:
            return response
        if response.status_code in absent:
            return None
        raise self._failure(method, response, what, attempts)

    def _send(
        self, method: str, url: str, what: str, transient_codes: Collection[str], **kwargs: Any
    ) -> tuple[requests.Response, int]:
        """The answer, and how many attempts it took."""
        if self._gave_up:
            raise ConnectionError(
                f"the registry did not answer {what} at {self.where} "
                f"(it stopped answering: {self._gave_up})"
            )
        url = urllib.parse.urljoin(self.base, url)
        kwargs.setdefault("allow_redirects", method == "GET")  # blobs move to storage
        headers = kwargs.pop("headers", {})
        # An upload Location or a Link may name another host: it gets no login of ours.
        ours = urllib.parse.urlsplit(url).netloc == urllib.parse.urlsplit(self.base).netloc
        challenged, attempts = not ours, retry.Attempts()
        while True:  # bounded: each pass answers the one challenge or counts a failure
            sent = self._authorization
            auth = {"Authorization": sent} if sent and ours else {}
            try:
                timeout = retry.for_body(self.timeout, kwargs.get("data"))
                response = self._session.request(
                    method, url, headers={**headers, **auth}, timeout=timeout, **kwargs
                )
            except retry.UNREACHABLE as exc:
                delay = attempts.after_exception(exc)
                if delay is None:
                    self._gave_up = attempts.describe(exc, self.timeout[1])
                    raise ConnectionError(
                        f"the registry did not answer {what} at {self.where} ({self._gave_up})"
                    ) from None
                time.sleep(delay)
                continue
            except requests.RequestException as exc:
                raise OSError(
                    f"the registry failed {what} at {self.where}: {type(exc).__name__}"
                ) from None
            if response.status_code == 401 and not challenged:
                challenged = True  # a login refused a second time is a refusal
                self._answer_challenge(response, sent, what)
                continue
            busy = response.status_code in retry.RETRY_STATUSES
            if busy or (transient_codes and _error_code(response) in transient_codes):
                delay = attempts.after_status(
                    response.status_code, response.headers, transient=True
                )
                if delay is not None:
                    log.debug("retrying %s at %s: HTTP %d", what, self.where, response.status_code)
                    time.sleep(delay)
                    continue
                if busy:  # a registry that keeps refusing an answer is down
                    self._gave_up = f"HTTP {response.status_code}, {attempts.failures} attempts"
                return response, attempts.failures
            return response, attempts.failures + 1

    # Auth

    def _answer_challenge(self, response: requests.Response, sent: str | None, what: str) -> None:
        scheme, _, rest = response.headers.get("WWW-Authenticate", "").partition(" ")
        params = {m[0].lower(): m[1] or m[2] for m in _CHALLENGE_PARAM.findall(rest)}
        with self._auth_lock:
            if self._authorization != sent:
                return  # another thread answered it meanwhile
            if scheme.lower() == "bearer" and params.get("realm"):
                self._authorization = "Bearer " + self._token(params, what)
            elif scheme.lower() == "basic":
                user, password = self._require_login(what)
                pair = base64.b64encode(f"{user}:{password}".encode()).decode()
                self._authorization = "Basic " + pair
            else:
                raise PermissionError(
                    f"the registry refused {what} at {self.where}: HTTP 401 "
                    "with no challenge this tool can answer"
                )

    def _token(self, challenge: dict[str, str], what: str) -> str:
        """A token from the challenge's realm, for every scope asked for so far, so
        that pulls and pushes in turn do not trade one token for another."""
        for scope in challenge.get("scope", "").split():
            resource, _, actions = scope.rpartition(":")
            self._scopes.setdefault(resource, set()).update(actions.split(","))
        realm = challenge["realm"]
        if not realm.startswith("https://") and not self.base.startswith("http://"):
            raise PermissionError(
                f"the registry at {self.where} sent its login to a "
                "plain-HTTP token service: refused"
            )
        params = {
            "scope": [f"{r}:{','.join(sorted(a))}" for r, a in self._scopes.items()],
            "service": challenge.get("service", ""),
        }
        try:
            answer = self._session.get(realm, params=params, auth=self._login, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ConnectionError(
                f"the registry's token service did not answer {what} for "
                f"{self.where} ({type(exc).__name__})"
            ) from None
        if answer.status_code in (401, 403):
            raise PermissionError(
                f"the registry's token service refused the login for "
                f"{self.host}: {self._login_advice()}"
            )
        try:
            document = answer.json()
            return str(document.get("token") or document["access_token"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise OSError(
                f"the registry's token service gave no token for {self.where} "
                f"(HTTP {answer.status_code})"
            ) from None

    def _require_login(self, what: str) -> tuple[str, str]:
        if self._login is None:
            raise PermissionError(
                f"the registry at {self.where} asks for a login for {what}: {self._login_advice()}"
            )
        return self._login

    def _login_advice(self) -> str:
        where = self._config or "the docker config (no HOME, no DOCKER_CONFIG)"
        if self._login:
            return f"check the login for {self.host} in {where}"
        return (
            f"none for {self.host} in {where}; run docker login {self.host} "
            "(credential helpers are not read)"
        )

    # Failures

    def _failure(
        self, method: str, response: requests.Response, what: str, attempts: int
    ) -> OSError:
        code = _error_code(response)
        answer = f"HTTP {response.status_code}" + (f" {code}" if code else "")
        if attempts > 1:
            answer += f", {attempts} attempts"
        elif response.status_code in retry.RETRY_STATUSES:
            answer += f", Retry-After {response.headers.get('Retry-After')} s is too long"
        if response.status_code == 405 and method == "DELETE":
            return PermissionError(
                f"the registry at {self.where} does not allow deletes "
                "(distribution: storage.delete.enabled)"
            )
        if response.status_code in (401, 403):
            return PermissionError(
                f"the registry refused {what} at {self.where}: {answer}; {self._login_advice()}"
            )
        return OSError(f"the registry failed {what} at {self.where}: {answer}")


def _error_code(response: requests.Response) -> str:
    """The registry's first error code (MANIFEST_BLOB_UNKNOWN...), not its message."""
    try:
        return str(response.json()["errors"][0]["code"])[:64]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
