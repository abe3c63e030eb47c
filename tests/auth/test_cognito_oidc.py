"""The cognito-oidc provider: ID tokens signed by keys the tests generate, verified against a JWKS
served from a loopback HTTP server the tests start and stop."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from bcce.auth.oidc import CognitoOidcProvider, JwksCache, check_jwks_url
from bcce.containers.application import Application
from bcce.errors import AuthenticationFailed, ConfigError, ExitCode
from bcce.events.audit import search
from bcce.workflow.runner import RunOptions

ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Test"
AUDIENCE = "client-1"


class JwksServer:
    """A JWKS document on 127.0.0.1, changeable while it serves; counts the requests."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown() waits for the loop's next poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"

    def publish(self, kid: str, private_key: Any, **extra: Any) -> None:
        algorithm = RSAAlgorithm if isinstance(private_key, rsa.RSAPrivateKey) else ECAlgorithm
        jwk = algorithm.to_jwk(private_key.public_key(), as_dict=True)
        self.keys.append({**jwk, "kid": kid, "use": "sig", **extra})

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def jwks(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> Iterator[JwksServer]:
    server = JwksServer()
    server.publish("rsa-1", rsa_key, alg="RS256")
    server.publish("ec-1", ec_key)  # no alg: ES256 follows from the curve
    yield server
    server.stop()


@pytest.fixture
def provider(jwks: JwksServer) -> Callable[..., CognitoOidcProvider]:
    """``provider(token=None, **options)``: a provider with its own JWKS cache, reading the token
    from a private environment."""

    def make(token: str | None = None, **options: Any) -> CognitoOidcProvider:
        settings: dict[str, Any] = {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_url": jwks.url,
            "environ": {"BCCE_ID_TOKEN": token} if token is not None else {},
            "jwks": JwksCache(),
            **options,
        }
        return CognitoOidcProvider(**settings)

    return make


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "7f3c-sub",
        "email": "ana@example.com",
        "cognito:username": "ana",
        "cognito:groups": ["dev", "ops"],
        "token_use": "id",
        "iat": now,
        "exp": now + 3600,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Any, kid: str = "rsa-1", algorithm: str = "RS256", **changes: Any) -> str:
    return jwt.encode(claims(**changes), key, algorithm=algorithm, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], body: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}."


def refusal(make: Callable[..., CognitoOidcProvider], token: str, **options: Any) -> str:
    """The message of the AuthenticationFailed the token gets; checks the token is not in it."""
    with pytest.raises(AuthenticationFailed) as caught:
        make(token, **options).authenticate()
    error = caught.value
    assert error.exit_code == ExitCode.NOT_AUTHORISED
    rendered = error.render()
    assert token not in rendered
    for part in token.split("."):
        assert len(part) < 8 or part not in rendered  # not even one part of it
    return error.message


# -- accepted --------------------------------------------------------------------------------
def test_a_valid_rsa_signed_id_token_authenticates_its_user_and_groups(
    provider: Callable[..., CognitoOidcProvider], rsa_key: rsa.RSAPrivateKey
) -> None:
    identity = provider(sign(rsa_key)).authenticate()

    assert (identity.user, identity.groups, identity.provider) == (
        "ana",
        ("dev", "ops"),
        "cognito-oidc",
    )
    assert identity.attributes["iss"] == ISSUER
    assert identity.attributes["sub"] == "7f3c-sub"
    assert identity.attributes["email"] == "ana@example.com"


def test_a_valid_ec_signed_id_token_authenticates(
    provider: Callable[..., CognitoOidcProvider], ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = sign(ec_key, kid="ec-1", algorithm="ES256")

    assert provider(token).authenticate().user == "ana"


def test_a_token_expired_within_the_leeway_is_still_accepted(
    provider: Callable[..., CognitoOidcProvider], rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, exp=int(time.time()) - 10)

    assert provider(token, leeway_seconds=30).authenticate().user == "ana"


def test_user_and_groups_come_from_the_configured_claims(
    provider: Callable[..., CognitoOidcProvider], rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, preferred_username="bob", roles=["admins", "dev", "admins"])

    identity = provider(
        token, username_claim="preferred_username", groups_claim="roles"
    ).authenticate()

    assert (identity.user, identity.groups) == ("bob", ("admins", "dev"))


@pytest.mark.parametrize(
    ("missing", "user"),
    [(["cognito:username"], "ana@example.com"), (["cognito:username", "email"], "7f3c-sub")],
    ids=["email", "sub"],
)
def test_without_the_username_claim_the_user_is_the_email_then_the_sub(
    provider: Callable[..., CognitoOidcProvider],
    rsa_key: rsa.RSAPrivateKey,
    missing: list[str],
    user: str,
) -> None:
    token = sign(rsa_key, **dict.fromkeys(missing))

    assert provider(token).authenticate().user == user


def test_a_token_without_a_groups_claim_has_no_groups(
    provider: Callable[..., CognitoOidcProvider], rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, **{"cognito:groups": None})

    assert provider(token).authenticate().groups == ()


def test_a_new_key_in_the_jwks_is_found_by_fetching_it_again(
    provider: Callable[..., CognitoOidcProvider],
    jwks: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    cache = JwksCache()
    provider(sign(rsa_key), jwks=cache).authenticate()
    jwks.publish("rsa-2", other_rsa_key, alg="RS256")  # the issuer rotates its keys

    identity = provider(sign(other_rsa_key, kid="rsa-2"), jwks=cache).authenticate()

    assert identity.user == "ana"
    assert jwks.requests == 2


def test_the_jwks_is_fetched_once_for_many_authentications(
    provider: Callable[..., CognitoOidcProvider], jwks: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    cache = JwksCache()

    for _ in range(3):
        provider(sign(rsa_key), jwks=cache).authenticate()

    assert jwks.requests == 1


# -- refused ---------------------------------------------------------------------------------
def test_an_expired_token_is_refused_naming_when_it_expired(
    provider: Callable[..., CognitoOidcProvider], rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, exp=1_700_000_000)

    message = refusal(provider, token)

    assert "the token expired at 2023-11-14T22:13:20Z (leeway 30s)" in message


def test_a_token_for_another_audience_is_refused(
    provider: Callable[..., CognitoOidcProvider], rsa_key: rsa.RSAPrivateKey
) -> None:
    message = refusal(provider, sign(rsa_key, aud="someone-else"))

    assert "audience 'someone-else' is not the configured 'client-1'" in message


def test_a_token_from_another_issuer_is_refused(
    provider: Callable[..., CognitoOidcProvider], rsa_key: rsa.RSAPrivateKey
) -> None:
    message = refusal(provider, sign(rsa_key, iss="https://evil.example.com"))

    assert f"issuer 'https://evil.example.com' is not the configured {ISSUER!r}" in message


def test_a_token_signed_by_another_key_with_a_known_kid_is_refused(
    provider: Callable[..., CognitoOidcProvider], other_rsa_key: rsa.RSAPrivateKey
) -> None:
    message = refusal(provider, sign(other_rsa_key, kid="rsa-1"))

    assert "signature does not verify with the key 'rsa-1'" in message


def test_an_unsigned_alg_none_token_is_refused(
    provider: Callable[..., CognitoOidcProvider],
) -> None:
    token = unsigned({"alg": "none", "kid": "rsa-1", "typ": "JWT"}, claims())

    message = refusal(provider, token)

    assert "algorithm 'none' is not allowed" in message


def test_an_unknown_kid_is_refused_after_fetching_the_jwks_once_more(
    provider: Callable[..., CognitoOidcProvider],
    jwks: JwksServer,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    message = refusal(provider, sign(other_rsa_key, kid="ghost"))

    assert "no signing key 'ghost' in the issuer's JWKS" in message
    assert jwks.requests == 2


def test_symmetric_and_malformed_keys_in_the_jwks_are_ignored(
    provider: Callable[..., CognitoOidcProvider],
    jwks: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    jwks.keys += [
        {"kty": "oct", "kid": "hmac", "k": b64(b"shared-secret"), "alg": "HS256"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        {
            "kty": "RSA",
            "kid": "enc",
            "use": "enc",
            **RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True),
        },
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},  # no kid
        "not a key",
    ]

    assert provider(sign(rsa_key)).authenticate().user == "ana"  # rsa-1 still works
    for kid in ("hmac", "broken", "enc"):
        assert f"no signing key {kid!r}" in refusal(provider, sign(rsa_key, kid=kid))


def test_hs256_signed_with_the_public_key_as_secret_is_refused(
    provider: Callable[..., CognitoOidcProvider], rsa_key: rsa.RSAPrivateKey
) -> None:
    # The classic confusion attack: the published key used as an HMAC secret.
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = b64(json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims()).encode())
    mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    token = f"{head}.{body}.{b64(mac)}"

    message = refusal(provider, token)

    assert "algorithm 'HS256' is not allowed" in message


def test_an_algorithm_the_key_does_not_declare_is_refused(
    provider: Callable[..., CognitoOidcProvider], rsa_key: rsa.RSAPrivateKey
) -> None:
    # rsa-1 declares RS256: a PS256 signature by the same key is not accepted.
    message = refusal(provider, sign(rsa_key, algorithm="PS256"))

    assert "algorithm PS256 does not fit the key 'rsa-1' (RSA, allows RS256)" in message


def test_an_rsa_algorithm_naming_an_ec_key_is_refused(
    provider: Callable[..., CognitoOidcProvider], rsa_key: rsa.RSAPrivateKey
) -> None:
    message = refusal(provider, sign(rsa_key, kid="ec-1"))

    assert "algorithm RS256 does not fit the key 'ec-1' (EC P-256, allows ES256)" in message


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # signing it
def test_a_token_signed_by_a_short_rsa_key_is_refused(
    provider: Callable[..., CognitoOidcProvider], jwks: JwksServer
) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwks.publish("weak", weak, alg="RS256")

    message = refusal(provider, sign(weak, kid="weak"))

    assert "cannot be verified with the key 'weak'" in message
    assert "1024 bits" in message


def test_a_token_not_yet_valid_is_refused(
    provider: Callable[..., CognitoOidcProvider], rsa_key: rsa.RSAPrivateKey
) -> None:
    message = refusal(provider, sign(rsa_key, nbf=int(time.time()) + 3600))

    assert "the token is not valid before" in message


def test_an_access_token_is_refused(
    provider: Callable[..., CognitoOidcProvider], rsa_key: rsa.RSAPrivateKey
) -> None:
    message = refusal(provider, sign(rsa_key, token_use="access"))

    assert "the token is an 'access' token (token_use): bcce accepts ID tokens only" in message


def test_a_token_without_an_audience_is_refused(
    provider: Callable[..., CognitoOidcProvider], rsa_key: rsa.RSAPrivateKey
) -> None:
    # Cognito access tokens carry client_id, not aud.
    message = refusal(provider, sign(rsa_key, aud=None, client_id=AUDIENCE))

    assert "the token has no 'aud' claim" in message


def test_a_malformed_token_is_refused(provider: Callable[..., CognitoOidcProvider]) -> None:
    message = refusal(provider, "not-a-jwt.at-all")

    assert "not a well-formed JWT" in message


def test_a_jwks_that_cannot_be_fetched_is_an_authentication_failure(
    provider: Callable[..., CognitoOidcProvider], jwks: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    url = jwks.url
    jwks.stop()

    message = refusal(provider, sign(rsa_key), jwks_url=url)

    assert f"cannot read the issuer's signing keys from {url}" in message


# -- where the token comes from --------------------------------------------------------------
def test_the_token_is_read_from_the_configured_file(
    provider: Callable[..., CognitoOidcProvider], rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    token_file = tmp_path / "id-token"
    token_file.write_text(sign(rsa_key, **{"cognito:username": "from-file"}) + "\n")

    identity = provider(sign(rsa_key), token_file=token_file).authenticate()

    assert identity.user == "from-file"  # the file wins over the environment


def test_the_token_is_read_from_the_environment_variable_through_settings(
    bcce_make_app: Callable[..., Application],
    jwks: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_ID_TOKEN", sign(rsa_key, **{"cognito:username": "from-env"}))
    app = bcce_make_app(auth=oidc_auth(jwks, token_env="MY_ID_TOKEN"))

    assert app.auth.authenticator().authenticate().user == "from-env"


def test_a_missing_token_file_is_an_authentication_failure_with_a_hint(
    provider: Callable[..., CognitoOidcProvider], tmp_path: Path
) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        provider(token_file=tmp_path / "absent").authenticate()

    assert "cannot read the ID token file" in caught.value.message
    assert "No such file or directory" in caught.value.message
    assert caught.value.hint is not None and "sign in" in caught.value.hint


def test_no_token_in_the_environment_is_an_authentication_failure(
    provider: Callable[..., CognitoOidcProvider],
) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        provider().authenticate()

    assert caught.value.message == (
        "no ID token: the environment variable BCCE_ID_TOKEN is empty or not set"
    )


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    ["http://example.com/jwks.json", "ftp://127.0.0.1/jwks.json", "file:///etc/jwks.json"],
)
def test_a_jwks_url_other_than_https_or_loopback_http_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_jwks_url(url)

    assert caught.value.key == "auth.cognito_oidc.jwks_url"


@pytest.mark.parametrize(
    "url",
    [
        "https://cognito-idp.eu-west-1.amazonaws.com/p/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks.json",
        "http://localhost/jwks.json",
        "http://[::1]:9000/jwks.json",
    ],
)
def test_https_and_loopback_http_jwks_urls_are_allowed(url: str) -> None:
    assert check_jwks_url(url) == url


def test_the_default_jwks_url_is_under_the_issuer() -> None:
    provider = CognitoOidcProvider(issuer=ISSUER + "/", audience=AUDIENCE)

    assert provider.jwks_url == f"{ISSUER}/.well-known/jwks.json"


def test_cognito_oidc_without_an_issuer_is_a_config_error(
    bcce_make_app: Callable[..., Application],
) -> None:
    app = bcce_make_app(auth={"provider": "cognito-oidc", "cognito_oidc": {"audience": "x"}})

    with pytest.raises(ConfigError) as caught:
        app.auth.authenticator()

    assert caught.value.key == "auth.cognito_oidc.issuer"


def test_a_bcce_settings_variable_cannot_be_the_token_variable(
    bcce_make_app: Callable[..., Application],
) -> None:
    with pytest.raises(ConfigError) as caught:
        bcce_make_app(auth={"cognito_oidc": {"token_env": "BCCE_AGENT__MODEL"}})

    assert "BCCE_<SECTION>... variables are settings" in caught.value.message


def test_bcce_id_token_in_the_environment_is_not_read_as_a_setting(
    bcce_make_app: Callable[..., Application], bcce_layer_options: Any
) -> None:
    bcce_layer_options.environ["BCCE_ID_TOKEN"] = "a.b.c"

    app = bcce_make_app()  # an unknown settings key would fail here

    assert app.settings().auth.cognito_oidc.token_env == "BCCE_ID_TOKEN"


# -- through the application -----------------------------------------------------------------
def oidc_auth(jwks: JwksServer, **options: Any) -> dict[str, Any]:
    return {
        "provider": "cognito-oidc",
        "cognito_oidc": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": jwks.url, **options},
    }


WORKFLOW = """
version: 1
workflow: hello
steps:
  - {id: greet, type: cmd, command: 'echo hello'}
"""


def test_the_token_identity_is_the_actor_of_the_audit_trail(
    bcce_make_app: Callable[..., Application],
    jwks: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("BCCE_ID_TOKEN", sign(rsa_key))
    trail = tmp_path / "audit.jsonl"
    app = bcce_make_app(
        auth=oidc_auth(jwks),
        events={"subscribers": ["audit"], "audit": {"file": str(trail)}},
        plugins={"disabled": ["http", "slack", "sqlite"]},
    )
    workflow = tmp_path / "wf.yml"
    workflow.write_text(WORKFLOW)

    result = app.workflow.runner().run(workflow, RunOptions(run_id="r1", workspace=tmp_path))
    app.shutdown_resources()

    assert result.exit_code == 0
    records = [r for r in search(trail) if r["run_id"] == "r1"]
    assert {r["type"] for r in records} >= {"workflow.started", "step.completed"}
    assert {json.dumps(r["actor"], sort_keys=True) for r in records} == {
        json.dumps(
            {
                "user": "ana",
                "groups": ["dev", "ops"],
                "provider": "cognito-oidc",
                "via": "auth provider",
            },
            sort_keys=True,
        )
    }
