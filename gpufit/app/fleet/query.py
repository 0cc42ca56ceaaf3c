"""The Prometheus HTTP API client `gpufit fleet` uses: instant queries on /api/v1/query, nothing else.

urllib only (no new dependency). Credentials come from the environment or a file, never from a command
line where `ps` would show them: a bearer token (GPUFIT_PROMETHEUS_TOKEN, or the file named by
GPUFIT_PROMETHEUS_TOKEN_FILE / --token-file) or basic auth (GPUFIT_PROMETHEUS_USER with
GPUFIT_PROMETHEUS_PASSWORD or GPUFIT_PROMETHEUS_PASSWORD_FILE / --password-file, or user:password in the
URL). The Authorization header is never carried over a redirect. TLS certificates are verified unless
--insecure; --ca-file adds a CA bundle.

Every way the server can fail becomes one message naming the URL and the query: a bad URL or a query
Prometheus rejects as bad_data is a usage error (exit 2, the selector or label came from the user); no
answer, a refused connection, TLS failure, 5xx, a login page instead of JSON, a redirect loop or a slow
server past --timeout is exit 5 (could not reach the source of GPU state).
"""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import NamedTuple

from ...errors import ProbeError, UsageError

API_PATH = "/api/v1/query"
DEFAULT_TIMEOUT_S = 10.0


class PrometheusError(ProbeError):
    """Prometheus could not be asked or did not answer usably (exit 5)."""


class Sample(NamedTuple):
    """One series of an instant-vector answer: its labels, its value and the evaluation time. (A named
    tuple: an answer over 1,000 nodes holds ~50,000 of them, and a frozen dataclass is 3x slower to make.)"""
    labels: dict
    value: float
    at: float  # the evaluation time Prometheus stamped on the answer (Unix seconds)


@dataclass(frozen=True)
class Auth:
    """What goes in the Authorization header (never both)."""
    bearer: str | None = None
    basic: tuple[str, str] | None = None

    def header(self) -> str | None:
        if self.bearer:
            return f"Bearer {self.bearer}"
        if self.basic:
            raw = f"{self.basic[0]}:{self.basic[1]}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        return None


def _read_secret(path: str, what: str) -> str:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            return f.read().strip()
    except OSError as e:
        raise UsageError(f"{what} {path}: cannot read: {e.strerror or e}") from None


def auth_from(env, token_file: str | None = None, password_file: str | None = None,
              url_user: str | None = None, url_password: str | None = None) -> Auth:
    """Credentials: options first, then the environment, then user:password in the URL."""
    token_file = token_file or env.get("GPUFIT_PROMETHEUS_TOKEN_FILE")
    if token_file:
        return Auth(bearer=_read_secret(token_file, "--token-file"))
    if env.get("GPUFIT_PROMETHEUS_TOKEN"):
        return Auth(bearer=env["GPUFIT_PROMETHEUS_TOKEN"].strip())
    user = env.get("GPUFIT_PROMETHEUS_USER") or url_user
    password_file = password_file or env.get("GPUFIT_PROMETHEUS_PASSWORD_FILE")
    if password_file:
        if not user:
            raise UsageError("--password-file needs a user: set GPUFIT_PROMETHEUS_USER or put user@ in the URL")
        return Auth(basic=(user, _read_secret(password_file, "--password-file")))
    if user:
        return Auth(basic=(user, env.get("GPUFIT_PROMETHEUS_PASSWORD") or url_password or ""))
    return Auth()


def parse_url(url: str) -> tuple[str, str | None, str | None]:
    """The API base (scheme://host[:port][/path], no credentials) and any user:password in it."""
    raw = (url or "").strip()
    try:
        p = urllib.parse.urlsplit(raw)
        p.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise UsageError(f"--prometheus {url!r}: not a URL ({e})") from None
    if p.scheme not in ("http", "https") or not p.hostname:
        raise UsageError(f"--prometheus {url!r}: give the server's http(s) URL, e.g. http://prometheus:9090")
    if p.query or p.fragment:
        raise UsageError(f"--prometheus {url!r}: give the server's base URL without ?query or #fragment")
    path = p.path.rstrip("/")
    if path.endswith(API_PATH):
        path = path[: -len(API_PATH)]
    host = p.hostname if ":" not in p.hostname else f"[{p.hostname}]"
    netloc = host + (f":{p.port}" if p.port else "")
    user = urllib.parse.unquote(p.username) if p.username else None
    password = urllib.parse.unquote(p.password) if p.password else None
    return urllib.parse.urlunsplit((p.scheme, netloc, path, "", "")), user, password


class Client:
    """Instant queries against one Prometheus server."""

    def __init__(self, url: str, *, auth: Auth | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 ca_file: str | None = None, insecure: bool = False):
        self.base, url_user, url_password = parse_url(url)
        self.auth = auth if auth is not None else auth_from({}, url_user=url_user, url_password=url_password)
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise UsageError(f"--timeout must be a positive duration, got {timeout_s}")
        self.timeout_s = timeout_s
        # build_opener keeps urllib's redirect handler: it follows up to 10 redirects and stops a loop
        # (4 visits of one URL) with an HTTPError carrying the 30x code, reported below
        handlers: list = []
        if self.base.startswith("https:"):
            try:
                ctx = ssl.create_default_context(cafile=os.path.expanduser(ca_file) if ca_file else None)
            except (OSError, ssl.SSLError) as e:
                raise UsageError(f"--ca-file {ca_file}: cannot load: {e}") from None
            if insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        # no proxy from the environment for a URL the user named; urllib would send it to $http_proxy
        handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)
        self.queries: list[str] = []  # every query sent, in order (for messages and --json)
        self.warnings: list[str] = []  # what Prometheus warned of (a partial answer, a dropped shard)

    @property
    def endpoint(self) -> str:
        return self.base + API_PATH

    def query(self, promql: str) -> list[Sample]:
        """One instant query; the answer must be a vector (or scalar). Raises UsageError for a query
        Prometheus rejects as bad data, PrometheusError for anything else that goes wrong."""
        self.queries.append(promql)
        body = self._get(promql)
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            snippet = body[:80].decode("utf-8", "replace").strip().replace("\n", " ")
            raise PrometheusError(
                f"{self.endpoint} answered {promql!r} with something that is not JSON ({snippet!r}...): "
                "is --prometheus the Prometheus server itself (not a login page or a dashboard)?") from None
        return self._samples(doc, promql)

    def _get(self, promql: str) -> bytes:
        url = self.endpoint + "?" + urllib.parse.urlencode({"query": promql})
        req = urllib.request.Request(url, headers={"Accept": "application/json",
                                                   "User-Agent": "gpufit-fleet"})
        header = self.auth.header()
        if header:
            req.add_unredirected_header("Authorization", header)
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            return self._http_error(e, promql)
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise PrometheusError(self._slow(promql)) from None
            if isinstance(reason, ssl.SSLError):
                raise PrometheusError(f"{self.endpoint}: TLS failed ({reason}); --ca-file adds a CA bundle, "
                                      "--insecure skips verification") from None
            raise PrometheusError(f"cannot reach Prometheus at {self.endpoint} for {promql!r}: "
                                  f"{getattr(reason, 'strerror', None) or reason}") from None
        except (socket.timeout, TimeoutError):
            raise PrometheusError(self._slow(promql)) from None
        except (OSError, ValueError) as e:  # a connection reset mid-answer, a broken status line
            raise PrometheusError(f"cannot read Prometheus' answer at {self.endpoint} for {promql!r}: {e}") from None

    def _slow(self, promql: str) -> str:
        return (f"Prometheus at {self.endpoint} did not answer {promql!r} within --timeout "
                f"{self.timeout_s:g}s")

    def _http_error(self, e: urllib.error.HTTPError, promql: str):
        if e.code in (301, 302, 303, 307, 308):
            raise PrometheusError(f"{self.endpoint} redirects in a loop for {promql!r} ({e.msg}); "
                                  "give --prometheus the URL the server finally answers on") from None
        try:
            doc = json.loads(e.read() or b"{}")
        except (ValueError, UnicodeDecodeError, OSError):
            doc = {}
        err = doc.get("error") if isinstance(doc, dict) else None
        kind = doc.get("errorType") if isinstance(doc, dict) else None
        if kind == "bad_data" or (e.code == 400 and err):
            raise UsageError(f"Prometheus at {self.endpoint} rejected the query {promql!r}: {err or e.msg} "
                             "(check --match and --by)") from None
        if e.code in (401, 403):
            raise PrometheusError(f"Prometheus at {self.endpoint} refused access ({e.code} {e.msg}): set "
                                  "GPUFIT_PROMETHEUS_TOKEN / --token-file, or GPUFIT_PROMETHEUS_USER with "
                                  "--password-file") from None
        if e.code == 404:
            raise PrometheusError(f"{self.endpoint} is not there (404): is --prometheus the Prometheus "
                                  "server's base URL (with its path prefix, if any)?") from None
        detail = f": {kind}: {err}" if err else ""
        raise PrometheusError(f"Prometheus at {self.endpoint} failed on {promql!r} with HTTP {e.code} "
                              f"{e.msg}{detail}") from None

    def _samples(self, doc, promql: str) -> list[Sample]:
        bad = PrometheusError(f"{self.endpoint} answered {promql!r} with JSON that is not a Prometheus "
                              "query result (no data.resultType)")
        if not isinstance(doc, dict):
            raise bad
        if doc.get("status") == "error":
            if doc.get("errorType") == "bad_data":
                raise UsageError(f"Prometheus at {self.endpoint} rejected the query {promql!r}: "
                                 f"{doc.get('error')} (check --match and --by)")
            raise PrometheusError(f"Prometheus at {self.endpoint} failed on {promql!r}: "
                                  f"{doc.get('errorType')}: {doc.get('error')}")
        data = doc.get("data")
        if not isinstance(data, dict) or "resultType" not in data:
            raise bad
        for w in doc.get("warnings") or ():
            self.warnings.append(f"Prometheus warns on {promql!r}: {w}")
        kind, result = data["resultType"], data.get("result")
        if kind == "scalar" and isinstance(result, list) and len(result) == 2:
            return [Sample({}, _number(result[1]), float(result[0]))]
        if kind != "vector" or not isinstance(result, list):
            raise PrometheusError(f"{self.endpoint} answered {promql!r} with a {kind}, not an instant vector")
        out = []
        for item in result:
            try:
                labels = item["metric"]
                at, raw = item["value"]
                out.append(Sample(labels if isinstance(labels, dict) else {}, _number(raw), float(at)))
            except (KeyError, TypeError, ValueError):
                raise bad from None
        return out


def _number(raw) -> float:
    """Prometheus writes sample values as strings ("1.5", "NaN", "+Inf"); float() reads them all."""
    return float(raw)
