"""Citizen sessions: real-name identities become holders; short access tokens and rotating refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session, joinedload

from backend.audit.chain import record_event
from backend.core.db.once import updated_rows
from backend.crypto import jws
from backend.crypto.encryption import FieldCipher
from backend.errors import AuditNote, Unauthorized
from backend.kernel.actors import Actor
from backend.kernel.identifiers import validate_holder_code, validate_uscc
from backend.kernel.ids import holder_index, new_public_id
from backend.keys import platform_jws
from backend.keys.deps import Deps
from backend.keys.keystore import PURPOSE_PLATFORM, KeyStore
from backend.keys.platform_jws import VerifiedTokens
from backend.models import AuthSession, Holder, HolderIdentity, RefreshToken, Representation

SUBJECT_DOMAIN = "login-subject"
ACCESS_TOKEN_TYP = "at+jwt"
ACCESS_TOKEN_AUDIENCE = "ecert-citizen-api"
ACCESS_TOKEN_TTL = timedelta(minutes=10)  # ≤ 15 minutes (DESIGN §5)
REFRESH_TOKEN_TTL = timedelta(days=30)


@dataclass(frozen=True)
class CompanyClaim:
    code: str
    name: str
    role: str = "legal_representative"


@dataclass(frozen=True)
class VerifiedIdentity:
    """What a login provider established about the person (real-name claims)."""

    provider: str
    subject: str
    name: str
    id_type: str
    id_number: str
    assurance_level: str
    companies: tuple[CompanyClaim, ...] = field(default_factory=tuple)
    # False for providers that only recognise an already bound identity (the mini-app openid): then only
    # `provider` and `subject` are meaningful, and the holder must have been bound by a real-name login.
    real_name: bool = True
    # Further login identities, (provider, subject), proven in the same login and to be bound to the holder
    # (a real-name login carrying the mini-app's code binds the openid).
    linked: tuple[tuple[str, str], ...] = ()
    # A mobile number (E.164) the provider verified: registered for counter-service SMS codes (第十一条). None
    # keeps the number an earlier login registered (an IdP need not release it every time).
    phone: str | None = None


@dataclass(frozen=True)
class IssuedSession:
    access_token: str
    refresh_token: str
    expires_in: int
    session: AuthSession


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def subject_index(cipher: FieldCipher, subject: str) -> str:
    """The stored form of a login subject (HolderIdentity.subject): a keyed digest, never the subject itself.

    Exact bytes (keyed_digest), not blind_index: blind_index folds case, and an OIDC `sub` or a WeChat openid is
    case-sensitive, so two accounts differing only in case must stay two accounts.
    """
    return cipher.keyed_digest(subject.encode(), SUBJECT_DOMAIN)


def subject_reference(cipher: FieldCipher, subject: str) -> str:
    """What an audit row may say about a subject: a short prefix of its digest (enough to correlate attempts)."""
    return subject_index(cipher, subject)[:12]


def representation_is_current(representation: Representation, *, now: datetime, max_age: timedelta) -> bool:
    """A represented company counts only while the IdP asserted it recently (ECERT_REPRESENTATION_MAX_AGE)."""
    return representation.asserted_at > now - max_age


def current_representations(holder: Holder, *, now: datetime, max_age: timedelta) -> list[Representation]:
    """The holder's representations asserted within `max_age` of `now`: the only ones that grant any access."""
    return [r for r in holder.representations if representation_is_current(r, now=now, max_age=max_age)]


def upsert_holder(session: Session, cipher: FieldCipher, identity: VerifiedIdentity, *, now: datetime) -> Holder:
    """Find or create the holder by blind index of the ID number; bind the identity; refresh representations."""
    id_number = validate_holder_code(identity.id_type, identity.id_number, field="id_number")
    index = holder_index(cipher, identity.id_type, id_number)
    holder = session.scalar(select(Holder).where(Holder.id_index == index))
    if holder is None:
        public_id = new_public_id()
        holder = Holder(public_id=public_id, id_type=identity.id_type, id_index=index,
                        id_number_enc=cipher.encrypt(id_number, f"holder:{public_id}:id_number"),
                        name_enc=cipher.encrypt(identity.name, f"holder:{public_id}:name"),
                        assurance_level=identity.assurance_level, created_at=now)
        session.add(holder)
        session.flush()
    else:
        holder.name_enc = cipher.encrypt(identity.name, f"holder:{holder.public_id}:name")
        holder.assurance_level = identity.assurance_level
    if identity.phone:
        holder.phone_enc = cipher.encrypt(identity.phone, f"holder:{holder.public_id}:phone")
    holder.last_login_at = now
    bind_identity(session, holder, provider=identity.provider, subject_digest=subject_index(cipher, identity.subject),
                  now=now)
    # The IdP's word at this login replaces what an earlier login said about represented companies.
    session.execute(delete(Representation).where(Representation.holder_id == holder.id))
    for company in identity.companies:
        code = validate_uscc(company.code, field="companies.code")
        session.add(Representation(holder_id=holder.id, company_code=code,
                                   company_index=holder_index(cipher, "001", code), company_name=company.name[:200],
                                   role=company.role, asserted_by=identity.provider, asserted_at=now))
    session.flush()
    return holder


def bind_identity(session: Session, holder: Holder, *, provider: str, subject_digest: str, now: datetime,
                  only_one: bool = False) -> bool:
    """Bind a login identity (provider, digest of the subject) to the holder (True when newly bound); refused when
    it is bound to someone else.

    `only_one`: the holder keeps a single identity of this provider (a new mini-app account replaces the old one).
    """
    bound = session.scalar(select(HolderIdentity).where(HolderIdentity.provider == provider,
                                                        HolderIdentity.subject == subject_digest))
    if bound is not None and bound.holder_id != holder.id:
        raise Unauthorized("该登录身份已绑定其他实名用户", code="identity_conflict")
    if bound is not None:
        bound.last_used_at = now
        return False
    if only_one:
        session.execute(delete(HolderIdentity).where(HolderIdentity.holder_id == holder.id,
                                                     HolderIdentity.provider == provider))
    session.add(HolderIdentity(holder_id=holder.id, provider=provider, subject=subject_digest, created_at=now,
                               last_used_at=now))
    session.flush()
    return True


def bound_holder(session: Session, cipher: FieldCipher, identity: VerifiedIdentity, *, actor: Actor,
                 now: datetime) -> Holder:
    """The holder a non-real-name identity (the mini-app openid) was bound to by an earlier real-name login.

    Represented companies are not renewed: only a real-name login asserts them (and they lapse with age).
    """
    digest = subject_index(cipher, identity.subject)
    bound = session.scalar(select(HolderIdentity).where(HolderIdentity.provider == identity.provider,
                                                        HolderIdentity.subject == digest))
    if bound is None:
        error = Unauthorized("请先完成一次实名认证登录，再使用小程序快捷登录", code="realname_required")
        error.audit = AuditNote(actor=actor, action="citizen.login_refused", object_type="login_provider",
                                object_id=identity.provider[:128], details={"reason": "realname_required"})
        raise error
    bound.last_used_at = now
    bound.holder.last_login_at = now
    return bound.holder


def last_real_name_login(session: Session, holder: Holder) -> datetime:
    """When the holder last authenticated with real-name claims: the step-up clock of a mini-app session.

    Sessions of non-real-name logins inherit this moment, so the newest session's auth_time is the answer.
    """
    latest = session.scalar(select(AuthSession.auth_time).where(AuthSession.holder_id == holder.id)
                            .order_by(AuthSession.auth_time.desc()).limit(1))
    return latest if latest is not None else holder.created_at


def log_in(deps: Deps, identity: VerifiedIdentity, *, origin: Actor, now: datetime) -> IssuedSession:
    """A login a provider verified: find or create the holder, bind linked identities, start a session.

    `origin` is the anonymous caller (address, request id); the holder becomes the actor once known.
    """
    session, cipher = deps.session, deps.cipher
    if identity.real_name:
        holder = upsert_holder(session, cipher, identity, now=now)
        auth_time = now
    else:
        holder = bound_holder(session, cipher, identity, actor=origin, now=now)
        auth_time = last_real_name_login(session, holder)
    actor = replace(origin, id=holder.public_id)
    for provider, subject in identity.linked:
        if bind_identity(session, holder, provider=provider, subject_digest=subject_index(cipher, subject), now=now,
                         only_one=True):
            record_event(session, actor=actor, action="citizen.identity_bound", now=now, object_type="holder",
                         object_id=holder.public_id, details={"provider": provider, "via": identity.provider})
    return start_session(session, deps.keys, holder, provider=identity.provider, issuer=deps.public_url,
                         actor=actor, now=now, auth_time=auth_time)


def holder_name(cipher: FieldCipher, holder: Holder) -> str:
    return cipher.decrypt(holder.name_enc, f"holder:{holder.public_id}:name")


def holder_id_number(cipher: FieldCipher, holder: Holder) -> str:
    return cipher.decrypt(holder.id_number_enc, f"holder:{holder.public_id}:id_number")


def _access_token(keys: KeyStore, auth: AuthSession, *, issuer: str, now: datetime) -> str:
    key = keys.active_key(PURPOSE_PLATFORM)
    issued = int(now.timestamp())
    return keys.sign_jwt(key, {
        "iss": issuer, "aud": ACCESS_TOKEN_AUDIENCE, "sub": auth.holder.public_id, "sid": auth.public_id,
        "auth_time": int(auth.auth_time.timestamp()), "iat": issued,
        "exp": issued + int(ACCESS_TOKEN_TTL.total_seconds()), "jti": secrets.token_urlsafe(12),
    }, headers={"typ": ACCESS_TOKEN_TYP})


def _new_refresh_token(session: Session, auth: AuthSession, now: datetime) -> str:
    token = "rt_" + secrets.token_urlsafe(32)
    session.add(RefreshToken(session_id=auth.id, token_hash=_hash(token), created_at=now,
                             expires_at=now + REFRESH_TOKEN_TTL))
    return token


def start_session(session: Session, keys: KeyStore, holder: Holder, *, provider: str, issuer: str, actor: Actor,
                  now: datetime, auth_time: datetime | None = None) -> IssuedSession:
    """`auth_time`: when the holder last proved their real name (default now; older for mini-app logins)."""
    auth = AuthSession(public_id=new_public_id(), holder=holder, provider=provider, auth_time=auth_time or now,
                       created_at=now, expires_at=now + REFRESH_TOKEN_TTL)
    session.add(auth)
    session.flush()
    refresh = _new_refresh_token(session, auth, now)
    record_event(session, actor=actor, action="citizen.login", now=now, object_type="holder",
                 object_id=holder.public_id, details={"provider": provider, "session": auth.public_id})
    return IssuedSession(_access_token(keys, auth, issuer=issuer, now=now), refresh,
                         int(ACCESS_TOKEN_TTL.total_seconds()), auth)


def refresh_session(session: Session, keys: KeyStore, refresh_token: str, *, issuer: str, actor: Actor,
                    now: datetime) -> IssuedSession:
    """Rotate: the presented token is used up and a new one issued. Reuse of a used token revokes the family.

    One conditional UPDATE uses the token up, so of concurrent refreshes with the same token exactly one wins and
    every other one is a reuse (a read, then a write would let two both see it unused: SQLite ignores FOR UPDATE).
    """
    stored = session.scalar(select(RefreshToken).where(RefreshToken.token_hash == _hash(refresh_token)))
    invalid = Unauthorized("刷新令牌无效或已过期", code="invalid_refresh_token")
    if stored is None:
        raise invalid
    auth = stored.session
    if auth.revoked_at is not None or stored.expires_at <= now or auth.expires_at <= now:
        raise invalid
    if not updated_rows(session, update(RefreshToken).where(RefreshToken.id == stored.id,
                                                           RefreshToken.used_at.is_(None)).values(used_at=now)):
        # A used token came back: someone holds a copy. End the whole family (it must outlive this failed
        # request, so the edge applies it after the rollback) and keep the trace.
        session_id = auth.id
        error = Unauthorized("刷新令牌已被使用，会话已全部注销", code="refresh_token_reused")
        error.after_rollback = lambda s: revoke_session(s, session_id, reason="refresh_token_reuse", now=now)
        error.audit = AuditNote(actor=actor, action="citizen.refresh_token_reused", object_type="auth_session",
                                object_id=auth.public_id, details={"holder": auth.holder.public_id})
        raise error
    new_refresh = _new_refresh_token(session, auth, now)
    session.flush()
    return IssuedSession(_access_token(keys, auth, issuer=issuer, now=now), new_refresh,
                         int(ACCESS_TOKEN_TTL.total_seconds()), auth)


def revoke_session(session: Session, session_id: int, *, reason: str, now: datetime) -> None:
    """End the session unless it has ended already (then its first reason stays)."""
    updated_rows(session, update(AuthSession).where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
                 .values(revoked_at=now, revoked_reason=reason))


def end_session(session: Session, auth: AuthSession, *, actor: Actor, now: datetime) -> None:
    if auth.revoked_at is None:
        auth.revoked_at = now
        auth.revoked_reason = "logout"
    record_event(session, actor=actor, action="citizen.logout", now=now, object_type="auth_session",
                 object_id=auth.public_id)


# Built once: building this statement (with its eager loads) cost as much as running it, on every request.
_SESSION_WITH_HOLDER = (select(AuthSession).where(AuthSession.public_id == bindparam("sid"))
                        .options(joinedload(AuthSession.holder).joinedload(Holder.representations)))


def check_access_token(session: Session, keys: KeyStore, token: str, *, issuer: str, now: datetime,
                       memo: VerifiedTokens | None = None) -> AuthSession:
    """The session behind a citizen access token; refused when expired, forged or its session was revoked.
    `memo`: tokens whose signature already held (see backend.keys.platform_jws)."""
    invalid = Unauthorized("访问令牌无效或已过期", code="invalid_token",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    try:
        # Signature and header checked once per token and remembered (backend.keys.platform_jws).
        parsed = platform_jws.verify(token, typ=ACCESS_TOKEN_TYP, purpose=PURPOSE_PLATFORM, keys=keys, memo=memo)
    except jws.JWSError as exc:
        raise invalid from exc
    claims = parsed.payload
    if not jws.claims_hold(claims, audience=ACCESS_TOKEN_AUDIENCE, issuer=issuer,
                           required=("exp", "iat", "sub", "sid")):
        raise invalid
    moment = now.timestamp()
    if not (claims["iat"] - 30 <= moment < claims["exp"]):
        raise invalid
    # The session is read on every request (a revoked one stops at once); the holder and the companies they
    # represent come in the same query, as nearly every citizen endpoint needs them.
    auth = session.scalars(_SESSION_WITH_HOLDER, {"sid": claims["sid"]}).unique().one_or_none()
    if auth is None or auth.revoked_at is not None or auth.holder.public_id != claims["sub"]:
        raise invalid
    return auth
