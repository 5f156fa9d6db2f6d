"""Key store: one active signing key per department and per platform purpose."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import jwt
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from backend.crypto.encryption import DecryptionError, unwrap_secret, wrap_secret
from backend.crypto.jwk import (
    JWKError,
    PrivateKey,
    PublicKey,
    alg_for_jwk,
    generate_private_key,
    load_public_jwk,
    private_key_from_der,
    private_key_to_der,
    public_jwk,
    thumbprint,
)
from backend.errors import Conflict, NotFound
from backend.models import Department, SigningKey

PURPOSE_CERTIFICATE = "certificate"  # a department signs certificates and status lists
PURPOSE_PLATFORM = "platform"  # show codes, access tokens, callbacks, audit checkpoints
PURPOSE_WALLET = "wallet"  # the platform-held holder key bound in `cnf`
PLATFORM_PURPOSES = (PURPOSE_PLATFORM, PURPOSE_WALLET)


@dataclass(frozen=True)
class VerificationKey:
    """What a kid stands for when a signature is checked: none of it ever changes for a kid."""

    kid: str
    purpose: str
    alg: str
    department_id: int | None
    public: PublicKey


class SignerKey(Protocol):
    """What signing needs of a key: a SigningKey row, or an ActiveKey read as plain columns."""

    @property
    def kid(self) -> str: ...

    @property
    def purpose(self) -> str: ...

    @property
    def alg(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def private_key_enc(self) -> bytes | None: ...


@dataclass(frozen=True)
class ActiveKey:
    """The active key of a platform purpose as plain columns (no ORM entity): for signing on hot paths."""

    kid: str
    purpose: str
    alg: str
    status: str
    private_key_enc: bytes | None


class HolderKeyNotHeld(Conflict):
    """A certificate's `cnf` names no wallet key whose private part the platform holds (e.g. a synced certificate
    bound to a key of the department's own choosing): no key-binding JWT can be made for it."""

    code = "holder_key_not_held"
    message = "该证照绑定的持证人密钥不由本平台保管，无法代持证人出示，请联系发证部门换发"


class KeyStore(Protocol):
    cache: KeyCache

    def active_key(self, purpose: str, department: Department | None = None) -> SigningKey: ...

    def active_platform_key(self, purpose: str) -> ActiveKey: ...

    def create_key(self, purpose: str, department: Department | None, alg: str, now: datetime) -> SigningKey: ...

    def rotate(self, purpose: str, department: Department | None, alg: str, now: datetime) -> SigningKey: ...

    def import_public_key(self, department: Department, jwk: dict[str, Any], now: datetime) -> SigningKey: ...

    def wallet_key_for(self, cnf: object) -> SigningKey: ...

    def check_platform_key(self) -> None: ...

    def sign_jwt(self, key: SignerKey, payload: dict[str, Any], headers: dict[str, Any] | None = None, *,
                 allow_retired: bool = False) -> str: ...

    def sign_bytes(self, key: SignerKey, message: bytes) -> bytes: ...

    def public_key(self, kid: str) -> tuple[SigningKey, PublicKey]: ...

    def verification_key(self, kid: str) -> VerificationKey: ...

    def held_platform_key(self, kid: str) -> VerificationKey: ...

    def jwks(self) -> dict[str, Any]: ...


_ACTIVE_PLATFORM_KEY = (
    select(SigningKey.kid, SigningKey.alg, SigningKey.status, SigningKey.private_key_enc)
    .where(SigningKey.purpose == bindparam("purpose"), SigningKey.status == "active",
           SigningKey.department_id.is_(None))
    .order_by(SigningKey.id.desc()).limit(1)
)

@dataclass(frozen=True)
class KeyCache:
    """What the key stores of one app remember, by kid: a kid is a key's thumbprint and names that key forever, so
    no entry goes stale. Writers take `lock`; readers need not (one dict read)."""

    # Decrypted private keys by (kid, SHA-256 of the master key): a store with another master key must not use them.
    private_keys: dict[tuple[str, bytes], PrivateKey] = field(default_factory=dict)
    verification_keys: dict[str, VerificationKey] = field(default_factory=dict)  # see `verification_key`
    # Platform public keys met while checking show codes, and their kids by short key id (backend.keys.showcode).
    show_code_keys: dict[str, PublicKey] = field(default_factory=dict)
    kids_by_prefix: dict[bytes, frozenset[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _unwrapped_private_key(key: SignerKey, master_key: bytes, cache: KeyCache) -> PrivateKey:
    # Keyed by the master key too: a store opened with another master key must not sign with this one.
    cache_key = (key.kid, hashlib.sha256(master_key).digest())
    cached = cache.private_keys.get(cache_key)
    if cached is not None:
        return cached
    if key.private_key_enc is None:
        raise NotFound("该密钥没有私钥，不能用于签名", code="signing_key_not_found")
    private = private_key_from_der(unwrap_secret(master_key, key.private_key_enc, key.kid))
    with cache.lock:
        cache.private_keys[cache_key] = private
    return private


# The active platform key's kid, alg, status and wrapped private key: read by GET /healthz on every probe.
ACTIVE_PLATFORM_KEY = _ACTIVE_PLATFORM_KEY.params(purpose=PURPOSE_PLATFORM)


def open_platform_key(row: Sequence[Any] | None, master_key: bytes, cache: KeyCache) -> None:
    """Unwrap the platform key of a row of ACTIVE_PLATFORM_KEY (None: there is none yet) with `master_key`, as the
    stores sharing `cache` would; raises DecryptionError if the master key is not the one that wrapped it."""
    if row is not None:
        kid, alg, status, private_key_enc = row
        _unwrapped_private_key(ActiveKey(kid, PURPOSE_PLATFORM, alg, status, private_key_enc), master_key, cache)


class LocalKeyStore:
    """Private keys stored in `signing_key`, wrapped with the master key (AES-GCM, kid as AAD)."""

    def __init__(self, session: Session, master_key: bytes, cache: KeyCache | None = None) -> None:
        """`cache`: the app's (backend.core.context.keystore); a store of its own when None."""
        self.session = session
        self._master_key = master_key
        self.cache = KeyCache() if cache is None else cache

    def _owner_filter(self, purpose: str, department: Department | None) -> Any:
        stmt = select(SigningKey).where(SigningKey.purpose == purpose, SigningKey.status == "active")
        if department is None:
            return stmt.where(SigningKey.department_id.is_(None))
        return stmt.where(SigningKey.department_id == department.id, SigningKey.origin != "external")

    def active_key(self, purpose: str, department: Department | None = None) -> SigningKey:
        key = self.session.scalars(self._owner_filter(purpose, department).order_by(SigningKey.id.desc())).first()
        if key is None:
            owner = department.code if department else "platform"
            raise NotFound(f"没有可用的签名密钥（{owner}/{purpose}）", code="signing_key_not_found")
        return key

    def active_platform_key(self, purpose: str) -> ActiveKey:
        """Like `active_key(purpose)` for a platform purpose, read as plain columns: show codes are minted with it
        on every request, and loading the entity cost more than the query. Read live: rotation shows at once."""
        if purpose not in PLATFORM_PURPOSES:
            raise ValueError(f"not a platform purpose: {purpose}")
        if self.session.new or self.session.dirty or self.session.deleted:
            self.session.flush()  # as the ORM query would (a key created in this transaction)
        row = self.session.connection().execute(_ACTIVE_PLATFORM_KEY, {"purpose": purpose}).first()
        if row is None:
            raise NotFound(f"没有可用的签名密钥（platform/{purpose}）", code="signing_key_not_found")
        return ActiveKey(row.kid, purpose, row.alg, row.status, row.private_key_enc)

    def create_key(self, purpose: str, department: Department | None, alg: str, now: datetime) -> SigningKey:
        private = generate_private_key(alg)
        jwk = public_jwk(private.public_key())
        kid = thumbprint(jwk)
        return self._add_key(kid, jwk, purpose, department, alg, now, origin="local",
                             private_key_enc=wrap_secret(self._master_key, private_key_to_der(private), kid))

    def rotate(self, purpose: str, department: Department | None, alg: str, now: datetime) -> SigningKey:
        """Retire the active key (it stays published for verification) and create a new one."""
        stmt = self._owner_filter(purpose, department).with_for_update()
        for old in self.session.scalars(stmt):
            old.status = "retired"
            old.retired_at = now
        return self.create_key(purpose, department, alg, now)

    def import_public_key(self, department: Department, jwk: dict[str, Any], now: datetime) -> SigningKey:
        """Register the public key of a department's own signing system (sync of externally signed certificates)."""
        public = load_public_jwk(jwk)
        alg = alg_for_jwk(jwk)
        clean = public_jwk(public)
        kid = thumbprint(clean)
        if self.session.scalar(select(SigningKey).where(SigningKey.kid == kid)) is not None:
            raise Conflict("该公钥已登记", code="key_already_registered")
        return self._add_key(kid, clean, PURPOSE_CERTIFICATE, department, alg, now, origin="external",
                             private_key_enc=None)

    def _add_key(self, kid: str, jwk: dict[str, Any], purpose: str, department: Department | None, alg: str,
                 now: datetime, *, origin: str, private_key_enc: bytes | None) -> SigningKey:
        """A new active key row named by `kid` (`private_key_enc` None for a department's external key)."""
        jwk.update({"kid": kid, "use": "sig", "alg": alg})
        key = SigningKey(kid=kid, purpose=purpose, department=department, alg=alg, origin=origin, status="active",
                         public_jwk=jwk, private_key_enc=private_key_enc, created_at=now)
        self.session.add(key)
        self.session.flush()
        return key

    def _private_key(self, key: SignerKey) -> PrivateKey:
        return _unwrapped_private_key(key, self._master_key, self.cache)

    def wallet_key_for(self, cnf: object) -> SigningKey:
        """The platform-held wallet key a certificate's `cnf` claim binds it to, active or retired.

        Matched by the RFC 7638 thumbprint of `cnf.jwk`'s key material (our kids are thumbprints), never by a `kid`
        member, which anyone can write next to other key material. Raises HolderKeyNotHeld (409) when `cnf` has no
        usable JWK or names a key we hold no private part of: signing with any other key would make a KB-JWT that
        no verifier accepts for this certificate.
        """
        jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
        if not isinstance(jwk, dict):
            raise HolderKeyNotHeld(details={"reason": "no_holder_key"})
        try:
            kid = thumbprint(jwk)
        except (JWKError, TypeError) as exc:
            raise HolderKeyNotHeld(details={"reason": "malformed_holder_key"}) from exc
        key = self.session.scalar(select(SigningKey).where(
            SigningKey.kid == kid, SigningKey.purpose == PURPOSE_WALLET, SigningKey.department_id.is_(None)))
        if key is None or key.private_key_enc is None:
            raise HolderKeyNotHeld(details={"reason": "foreign_holder_key", "thumbprint": kid})
        return key

    def check_platform_key(self) -> None:
        """Unwrap the active platform key if there is one (raises DecryptionError on a wrong master key)."""
        row = self.session.connection().execute(ACTIVE_PLATFORM_KEY).first()
        open_platform_key(row, self._master_key, self.cache)

    @staticmethod
    def _refuse_retired(key: SignerKey, *, allow_retired: bool = False) -> None:
        """Only active keys sign; `allow_retired` lets a retired wallet key (and no other) sign too."""
        if key.status == "active" or (allow_retired and key.purpose == PURPOSE_WALLET):
            return
        raise Conflict("退役密钥不能再签名", code="signing_key_retired")

    def sign_jwt(self, key: SignerKey, payload: dict[str, Any], headers: dict[str, Any] | None = None, *,
                 allow_retired: bool = False) -> str:
        """A JWS by `key`. `allow_retired` is for key-binding JWTs of existing certificates only: their wallet key
        (chosen with `wallet_key_for`) proves possession for as long as the certificate lives, retired or not;
        it has no effect on department and platform keys, which never sign once retired."""
        self._refuse_retired(key, allow_retired=allow_retired)
        return jwt.encode(
            payload, self._private_key(key), algorithm=key.alg, headers={**(headers or {}), "kid": key.kid}
        )

    def sign_bytes(self, key: SignerKey, message: bytes) -> bytes:
        """A detached signature in JOSE form (ES256: raw r||s; EdDSA: Ed25519), for compact formats (show codes)."""
        self._refuse_retired(key)
        signature: bytes = jwt.get_algorithm_by_name(key.alg).sign(message, self._private_key(key))
        return signature

    def public_key(self, kid: str) -> tuple[SigningKey, PublicKey]:
        key = self.session.scalar(select(SigningKey).where(SigningKey.kid == kid))
        if key is None:
            raise NotFound("未知的密钥标识", code="unknown_kid")
        return key, load_public_jwk({k: v for k, v in key.public_jwk.items() if k not in {"kid", "use", "alg"}})

    def verification_key(self, kid: str) -> VerificationKey:
        """Like `public_key`, without a query once the kid is known: every access token is checked with it.

        A kid is the key's thumbprint and its row is never deleted, so what it stands for never changes; the
        key's status does (retirement), but retired keys keep verifying what they signed.
        """
        known = self.cache.verification_keys.get(kid)
        if known is None:
            key, public = self.public_key(kid)
            known = VerificationKey(key.kid, key.purpose, key.alg, key.department_id, public)
            self.cache.verification_keys[kid] = known
        return known

    def held_platform_key(self, kid: str) -> VerificationKey:
        """The platform key `kid`, active or retired, as this store holds it: for signatures that must stand against
        someone who can write to the database but holds no master key (audit checkpoints).

        Its private part must open with the master key (the kid is the wrapping's associated data) and be the key the
        kid names, and the public key answered is derived from that private part, never read from the row. Raises
        NotFound for any other kid: unknown, a department's, or a key row written without the master key.
        """
        key = self.session.scalar(select(SigningKey).where(
            SigningKey.kid == kid, SigningKey.purpose == PURPOSE_PLATFORM, SigningKey.department_id.is_(None)))
        try:
            if key is None:
                raise LookupError(kid)
            public = self._private_key(key).public_key()
            if thumbprint(public_jwk(public)) != kid:
                raise LookupError(kid)
        except (LookupError, NotFound, DecryptionError, JWKError, ValueError) as exc:
            raise NotFound("未知的密钥标识", code="unknown_kid") from exc
        return VerificationKey(key.kid, key.purpose, key.alg, None, public)

    def jwks(self) -> dict[str, Any]:
        """Every public key, active and retired, so old signatures keep verifying."""
        keys = self.session.scalars(select(SigningKey).order_by(SigningKey.id)).all()
        return {"keys": [dict(key.public_jwk) for key in keys]}
