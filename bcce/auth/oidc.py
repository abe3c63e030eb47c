"""The ``cognito-oidc`` provider: an OpenID Connect ID token, verified against the issuer's JWKS.

The token is read from ``auth.cognito_oidc.token_file`` or, without one, from the environment
variable ``token_env``. It is accepted only when all of this holds:

* its ``alg`` is an asymmetric algorithm (RS*, PS*, ES*, EdDSA; never ``none`` or HS*) that the
  JWKS key named by its ``kid`` allows: the key's own ``alg``, else the algorithms of its type;
* the signature verifies with that key (an unknown ``kid`` fetches the JWKS once more, for key
  rotation, then fails);
* ``iss`` is the configured issuer, ``aud`` the configured audience, ``exp`` is in the future and
  ``nbf``/``iat`` (when present) are not, each with ``leeway_seconds`` of clock skew;
* ``token_use``, when present (Cognito), is ``id``: access tokens are refused.

The user is the ``username_claim`` (falling back to ``email``, then ``sub``); the groups are the
``groups_claim``. Every refusal is :class:`~bcce.errors.AuthenticationFailed` naming what was
wrong; the token itself never appears in a message.

The JWKS is fetched from ``jwks_url`` (default ``<issuer>/.well-known/jwks.json``) over HTTPS,
or plain HTTP to 127.0.0.1, ::1 or localhost only (a local test issuer), without following
redirects, and kept for the life of the process.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bcce.auth.provider import Identity
from bcce.errors import AuthenticationFailed, ConfigError

if TYPE_CHECKING:
    from bcce.settings.model import BcceSettings

#: The only algorithms a token may be signed with: asymmetric ones, whose verification key is
#: public. HS* would let anyone holding the published key forge tokens.
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
_BY_KEY_TYPE: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("RSA", None): ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    ("EC", "P-256"): ("ES256",),
    ("EC", "P-384"): ("ES384",),
    ("EC", "P-521"): ("ES512",),
    ("OKP", "Ed25519"): ("EdDSA",),
    ("OKP", "Ed448"): ("EdDSA",),
}
_LOOPBACK_HOSTS = frozenset({"localhost"})
MAX_JWKS_BYTES = 1024 * 1024
MAX_TOKEN_BYTES = 64 * 1024
DEFAULT_TIMEOUT = 10.0
_SHOWN = 120  # characters of a token-supplied value (kid, iss, aud) shown in a message


@dataclass(frozen=True)
class SigningKey:
    """One usable key of a JWKS: its id, the public key and the algorithms it may verify."""

    kid: str
    key: Any
    algorithms: tuple[str, ...]
    kind: str


# -- the JWKS ------------------------------------------------------------------------------------
def check_jwks_url(url: str) -> str:
    """``url`` if bcce may fetch a JWKS from it (https, or http to the loopback), else raise."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return url
    raise ConfigError(
        f"the JWKS URL {url!r} is not https (plain http is allowed only to 127.0.0.1, ::1 "
        "and localhost)",
        key="auth.cognito_oidc.jwks_url",
        hint="use the issuer's https URL, e.g. "
        "https://cognito-idp.REGION.amazonaws.com/POOL_ID/.well-known/jwks.json",
    )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead anywhere: the JWKS is read from the configured URL or not at all."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch_jwks(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> Mapping[str, Any]:
    """GET the JWKS document at ``url`` (no redirects, at most 1 MiB, a timeout)."""
    check_jwks_url(url)
    host = urlsplit(url).hostname or ""
    # A local issuer is reached directly, whatever HTTP(S)_PROXY says; others honour the proxy.
    proxies = (
        urllib.request.ProxyHandler({}) if _is_loopback(host) else urllib.request.ProxyHandler()
    )
    opener = urllib.request.build_opener(proxies, _NoRedirects())
    # The scheme was checked above: https, or http to the loopback.
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_JWKS_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise _jwks_error(url, f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise _jwks_error(url, str(reason)) from None
    if len(body) > MAX_JWKS_BYTES:
        raise _jwks_error(url, f"the document is larger than {MAX_JWKS_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        raise _jwks_error(url, "the document is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _jwks_error(url, "the document has no 'keys' list")
    return document


def _jwks_error(url: str, reason: str) -> AuthenticationFailed:
    return AuthenticationFailed(
        f"cannot read the issuer's signing keys from {url}: {reason}",
        hint="check auth.cognito_oidc.jwks_url (or issuer) and network access to it",
    )


def signing_keys(document: Mapping[str, Any]) -> dict[str, SigningKey]:
    """The JWKS's signature keys by ``kid``; symmetric, unknown and unusable keys are left out."""
    import jwt

    keys: dict[str, SigningKey] = {}
    for entry in document.get("keys", ()):
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        algorithms = _key_algorithms(entry)
        if not algorithms:
            continue  # oct (HMAC) keys, unknown curves, an alg the key type cannot do
        try:
            key = jwt.PyJWK(entry, algorithm=algorithms[0]).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue  # malformed key material: the document is not trusted input
        kind = " ".join(str(entry[part]) for part in ("kty", "crv") if part in entry)
        keys[entry["kid"]] = SigningKey(entry["kid"], key, algorithms, kind)
    return keys


def _key_algorithms(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """The algorithms a JWK may verify: its declared ``alg`` if its type can do it, else every
    asymmetric algorithm of its type and curve; none for anything else."""
    kty = entry.get("kty")
    family = _BY_KEY_TYPE.get((str(kty), None if kty == "RSA" else str(entry.get("crv"))), ())
    declared = entry.get("alg")
    if declared is None:
        return family
    return (declared,) if declared in family else ()


class JwksCache:
    """The signing keys of each JWKS URL, fetched once per process (and again on rotation)."""

    def __init__(
        self,
        fetch: Callable[..., Mapping[str, Any]] = fetch_jwks,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._fetch = fetch
        self.timeout = timeout
        self._keys: dict[str, dict[str, SigningKey]] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def keys(self, url: str, *, refresh: bool = False) -> dict[str, SigningKey]:
        with self._lock:
            if refresh or url not in self._keys:
                document = self._fetch(url, timeout=self.timeout)
                self.fetches += 1
                self._keys[url] = signing_keys(document)
            return self._keys[url]


#: The process's JWKS cache, shared by every provider (tests pass their own).
PROCESS_JWKS = JwksCache()


# -- the provider --------------------------------------------------------------------------------
class CognitoOidcProvider:
    """The user an ID token from an OIDC issuer (Amazon Cognito, say) vouches for."""

    name = "cognito-oidc"

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str | None = None,
        token_file: Path | None = None,
        token_env: str = "BCCE_ID_TOKEN",  # noqa: S107 - a variable's name, not a secret
        username_claim: str = "cognito:username",
        groups_claim: str = "cognito:groups",
        leeway_seconds: int = 30,
        environ: Mapping[str, str] | None = None,
        jwks: JwksCache | None = None,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = check_jwks_url(jwks_url or f"{issuer.rstrip('/')}/.well-known/jwks.json")
        self.token_file = token_file
        self.token_env = token_env
        self.username_claim = username_claim
        self.groups_claim = groups_claim
        self.leeway_seconds = leeway_seconds
        self._environ = environ
        self._jwks = jwks if jwks is not None else PROCESS_JWKS

    @classmethod
    def from_settings(
        cls, settings: BcceSettings, *, jwks: JwksCache | None = None
    ) -> CognitoOidcProvider:
        """The provider ``auth.cognito_oidc`` configures; ``issuer`` and ``audience`` are
        required (a :class:`~bcce.errors.ConfigError` names the one missing)."""
        section = settings.auth.cognito_oidc
        for key in ("issuer", "audience"):
            if not getattr(section, key):
                raise ConfigError(
                    f"auth.provider is cognito-oidc but auth.cognito_oidc.{key} is not set",
                    key=f"auth.cognito_oidc.{key}",
                    hint="set the token issuer (https://cognito-idp.REGION.amazonaws.com/"
                    "POOL_ID) and audience (the app client id)",
                )
        assert section.issuer is not None and section.audience is not None
        return cls(
            issuer=section.issuer,
            audience=section.audience,
            jwks_url=section.jwks_url,
            token_file=section.token_file,
            token_env=section.token_env,
            username_claim=section.username_claim,
            groups_claim=section.groups_claim,
            leeway_seconds=section.leeway_seconds,
            jwks=jwks,
        )

    def authenticate(self) -> Identity:
        claims = self.verify(self.read_token())
        attributes = {"iss": str(claims["iss"]), "sub": str(claims.get("sub", ""))}
        if isinstance(claims.get("email"), str):
            attributes["email"] = claims["email"]
        attributes["expires"] = _iso(claims["exp"])
        return Identity(
            user=self._user(claims),
            groups=self._groups(claims),
            provider=self.name,
            attributes=attributes,
        )

    # -- the token ---------------------------------------------------------------------------
    def read_token(self) -> str:
        """The ID token from ``token_file`` if one is configured, else from ``token_env``."""
        hint = (
            "sign in to the identity provider and put the ID token in "
            f"${self.token_env} or in the file auth.cognito_oidc.token_file names"
        )
        if self.token_file is not None:
            try:
                with self.token_file.open("rb") as handle:
                    raw = handle.read(MAX_TOKEN_BYTES + 1)
            except OSError as exc:
                raise AuthenticationFailed(
                    f"cannot read the ID token file {self.token_file}: "
                    f"{exc.strerror or type(exc).__name__}",
                    hint=hint,
                ) from None
            if len(raw) > MAX_TOKEN_BYTES:
                raise AuthenticationFailed(
                    f"the ID token file {self.token_file} is larger than {MAX_TOKEN_BYTES} bytes",
                    hint=hint,
                )
            token = raw.decode("utf-8", "replace").strip()
            where = f"the file {self.token_file}"
        else:
            environ = self._environ if self._environ is not None else os.environ
            token = environ.get(self.token_env, "").strip()
            where = f"the environment variable {self.token_env}"
        if not token:
            raise AuthenticationFailed(f"no ID token: {where} is empty or not set", hint=hint)
        return token

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of ``token`` once it passes every check (module docstring), else raise."""
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _refused(f"the token is not a well-formed JWT ({exc})") from None
        alg = header.get("alg")
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise _refused(
                f"the token's algorithm {_show(alg)} is not allowed: only asymmetric "
                f"signatures are accepted ({', '.join(ASYMMETRIC_ALGORITHMS)})"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refused("the token has no 'kid' header naming its signing key")
        key = self._key(kid)
        if alg not in key.algorithms:
            raise _refused(
                f"the token's algorithm {alg} does not fit the key {_show(kid)} "
                f"({key.kind}, allows {', '.join(key.algorithms)})"
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(key.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                # A short RSA key is refused, not merely warned about.
                options={"require": ["exp", "iss", "aud"], "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            raise self._claim_error(token, kid, exc) from None
        token_use = claims.get("token_use")
        if token_use is not None and token_use != "id":  # noqa: S105 - a claim value
            raise _refused(
                f"the token is an {_show(token_use)} token (token_use): bcce accepts ID tokens only"
            )
        return claims

    def _key(self, kid: str) -> SigningKey:
        keys = self._jwks.keys(self.jwks_url)
        if kid not in keys:
            keys = self._jwks.keys(self.jwks_url, refresh=True)  # the issuer may have rotated
        if kid not in keys:
            raise _refused(
                f"no signing key {_show(kid)} in the issuer's JWKS at {self.jwks_url} "
                "(fetched again to allow for key rotation)"
            )
        return keys[kid]

    def _claim_error(self, token: str, kid: str, exc: Exception) -> AuthenticationFailed:
        """What was wrong, in words; claims are read only after the signature verified."""
        import jwt

        if isinstance(exc, jwt.InvalidSignatureError):
            return _refused(f"the token's signature does not verify with the key {_show(kid)}")
        if isinstance(exc, jwt.InvalidAlgorithmError | jwt.InvalidKeyError):
            return _refused(f"the token cannot be verified with the key {_show(kid)} ({exc})")
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return _refused(f"the token's claims cannot be read ({exc})")
        leeway = f"leeway {self.leeway_seconds}s"
        if isinstance(exc, jwt.ExpiredSignatureError):
            return _refused(f"the token expired at {_iso(claims.get('exp'))} ({leeway})")
        if isinstance(exc, jwt.MissingRequiredClaimError):
            extra = (
                " (an access token has client_id instead: bcce accepts ID tokens only)"
                if exc.claim == "aud"
                else ""
            )
            return _refused(f"the token has no {exc.claim!r} claim{extra}")
        if isinstance(exc, jwt.InvalidAudienceError):
            return _refused(
                f"audience {_show(claims.get('aud'))} is not the configured {self.audience!r}"
            )
        if isinstance(exc, jwt.InvalidIssuerError):
            return _refused(
                f"issuer {_show(claims.get('iss'))} is not the configured {self.issuer!r}"
            )
        if isinstance(exc, jwt.ImmatureSignatureError):
            claim = "nbf" if "(nbf)" in str(exc) else "iat"
            label = "not valid before" if claim == "nbf" else "issued in the future, at"
            return _refused(f"the token is {label} {_iso(claims.get(claim))} ({leeway})")
        return _refused(f"the token's claims are invalid ({exc})")

    # -- the identity ------------------------------------------------------------------------
    def _user(self, claims: Mapping[str, Any]) -> str:
        for claim in dict.fromkeys((self.username_claim, "email", "sub")):
            value = claims.get(claim)
            if isinstance(value, str) and value:
                return value
        raise _refused(
            f"the token names no user: it has none of the claims {self.username_claim!r}, "
            "'email', 'sub'"
        )

    def _groups(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        value = claims.get(self.groups_claim)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
            raise _refused(f"the token's {self.groups_claim!r} claim is not a list of names")
        return tuple(sorted(set(value)))


def _refused(reason: str) -> AuthenticationFailed:
    return AuthenticationFailed(
        f"the ID token is refused: {reason}",
        hint="sign in again to get a fresh ID token; if it persists, check auth.cognito_oidc "
        "(issuer, audience, jwks_url) against the identity provider",
    )


def _show(value: object) -> str:
    """A token-supplied value in a message: quoted and cut short."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _iso(timestamp: object) -> str:
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        try:
            moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
        except (OverflowError, OSError, ValueError):
            return str(timestamp)
        return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    return _show(timestamp)


__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "PROCESS_JWKS",
    "CognitoOidcProvider",
    "JwksCache",
    "SigningKey",
    "check_jwks_url",
    "fetch_jwks",
    "signing_keys",
]
