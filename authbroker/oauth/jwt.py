"""JWTs for client authentication (RFC 7523 §2.2; OpenID Connect Core §9 `private_key_jwt` and
`client_secret_jwt`): the app's signing keys, their public JWKS, and the client assertion.

The signing is joserfc's; what is decided here is which keys are acceptable (RSA of 2048 bits or
more, EC on P-256), how a key is named (its RFC 7638 thumbprint, so the same key always has the
same `kid`), and what an assertion claims. A private key never appears in a repr, an exception's
text or a JWKS: `SigningKey.public_jwk` is all that leaves.
"""

from __future__ import annotations

import secrets
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, OctKey, RSAKey

__all__ = [
    "ASSERTION_LIFETIME",
    "CLIENT_ASSERTION_TYPE",
    "KeyAlgorithm",
    "SigningKey",
    "client_assertion",
    "generate_key",
    "import_key",
    "jwks",
]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 60
"""Seconds an assertion is valid: long enough for clock skew, short enough that a copy is
worth nothing soon after."""
KeyAlgorithm = Literal["RS256", "ES256"]
ALGORITHMS: tuple[str, ...] = get_args(KeyAlgorithm)
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class SigningKey:
    """A private key of the app's, in PEM (PKCS#8), with the `kid` and algorithm it signs with."""

    kid: str
    alg: KeyAlgorithm
    pem: str = field(repr=False)

    def _key(self) -> RSAKey | ECKey:
        kind = RSAKey if self.alg == "RS256" else ECKey
        return kind.import_key(self.pem)

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK (RFC 7517), what a provider registers; never private parts."""
        public = self._key().as_dict(private=False)
        return {**public, "kid": self.kid, "alg": self.alg, "use": "sig"}


def generate_key(alg: KeyAlgorithm = "RS256") -> SigningKey:
    """A new key: RSA 2048 for RS256, P-256 for ES256."""
    if alg not in ALGORITHMS:
        raise ValueError(f"alg must be one of {', '.join(ALGORITHMS)}")
    key = RSAKey.generate_key(MIN_RSA_BITS) if alg == "RS256" else ECKey.generate_key("P-256")
    return _signing_key(key, alg)


def import_key(pem: str, alg: KeyAlgorithm | None = None) -> SigningKey:
    """A key from an operator's PEM private key. The algorithm follows from the key (RS256 for
    RSA, ES256 for P-256) and, when given, must agree. ValueError names what is wrong, never
    quoting the key."""
    text = pem.strip()
    if "ENCRYPTED" in text:
        raise ValueError(
            "the private key is encrypted: decrypt it first (openssl pkey -in key.pem -out "
            "plain.pem)"
        )
    if "PRIVATE KEY" not in text:
        raise ValueError("not a PEM private key (expected -----BEGIN … PRIVATE KEY-----)")
    key = _read_private(text)
    found: KeyAlgorithm
    if isinstance(key, RSAKey):
        bits = key.raw_value.key_size
        if bits < MIN_RSA_BITS:
            raise ValueError(f"the RSA key has {bits} bits; at least {MIN_RSA_BITS} are needed")
        found = "RS256"
    else:
        if key.curve_name != "P-256":
            raise ValueError(f"the EC key is on {key.curve_name}; only P-256 (ES256) is supported")
        found = "ES256"
    if alg is not None and alg != found:
        raise ValueError(f"the key signs with {found}, not {alg}")
    return _signing_key(key, found)


def _read_private(text: str) -> RSAKey | ECKey:
    for kind in (RSAKey, ECKey):
        try:
            with warnings.catch_warnings():  # a small key is refused below, with its size
                warnings.simplefilter("ignore", SecurityWarning)
                key = kind.import_key(text)
        except (JoseError, ValueError, TypeError):
            continue
        if key.is_private:
            return key
        raise ValueError("a public key was given; the private key is needed")
    raise ValueError("the PEM is neither an RSA nor an EC private key")


def _signing_key(key: RSAKey | ECKey, alg: KeyAlgorithm) -> SigningKey:
    pem = key.as_pem(private=True)
    return SigningKey(kid=key.thumbprint(), alg=alg, pem=pem.decode("ascii"))


def jwks(keys: tuple[SigningKey, ...] | list[SigningKey]) -> dict[str, Any]:
    """The public keys as a JWK Set (RFC 7517 §5), the signing key first."""
    return {"keys": [key.public_jwk() for key in keys]}


def client_assertion(
    client_id: str,
    audience: str,
    *,
    key: SigningKey | None = None,
    secret: str | None = None,
    now: float | None = None,
) -> str:
    """A client assertion (RFC 7523 §3): `iss` = `sub` = the client id, `aud` the authorization
    server (its token endpoint unless told otherwise), a unique `jti`, `iat` now and `exp` a
    minute later. Signed with `key` (private_key_jwt) or HS256 over `secret`
    (client_secret_jwt)."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": secrets.token_urlsafe(24),
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
    }
    if key is not None:
        header = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, key._key())
    if secret is None:
        raise ValueError("a client assertion needs a signing key or a client secret")
    with warnings.catch_warnings():
        # The secret's length is the provider's choice, not ours to warn about on every request.
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, OctKey.import_key(secret))
