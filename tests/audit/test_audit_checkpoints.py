"""Signed audit checkpoints cannot be switched off: a forged, deleted or outdated checkpoint fails `audit verify`,
which names the checkpoint and the problem and exits non-zero."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
import sqlalchemy as sa

from backend.core.context import keystore
from backend.crypto.jwk import generate_private_key, public_jwk, thumbprint
from backend.extensions import db
from backend.models import AuditCheckpoint, SigningKey
from tests.audit.audit_support import (
    assert_broken_at,
    checkpoints,
    execute,
    rehash,
    report,
    stored_event,
    write_events,
)
from tests.conftest import START

CHECKPOINT_TYP = "audit-checkpoint+jwt"


@dataclass(frozen=True)
class Signed:
    """The two checkpoints of the `signed_chain` fixture: `older` at a seq before `newer`'s."""

    older: AuditCheckpoint
    newer: AuditCheckpoint
    head_seq: int


def sign_checkpoint(runner: Any) -> None:
    result = runner.invoke(args=["audit", "checkpoint"])
    assert result.exit_code == 0, result.output


@pytest.fixture
def signed_chain(app, runner, catalog, clock) -> Signed:
    """Events, a checkpoint, more events, a second checkpoint, and a few events after it."""
    write_events(app, clock, count=4)
    sign_checkpoint(runner)
    write_events(app, clock, count=4)
    sign_checkpoint(runner)
    write_events(app, clock, count=3)
    older, newer = checkpoints(app)
    assert report(app).ok
    return Signed(older, newer, newer.seq + 4)


def cut_short(app: Any, keep: int) -> None:
    """Delete every event after `keep` and rewind the head onto it: consistent, as far as the events go."""
    kept = stored_event(app, keep)
    execute(app, "DELETE FROM audit_event WHERE seq > :seq", seq=keep)
    execute(app, "UPDATE audit_head SET seq = :seq, chain_hash = :h WHERE id = 1", seq=keep, h=kept.chain_hash)


def foreign_signature(payload: dict[str, Any], *, kid: str, private: Any) -> str:
    return jwt.encode(payload, private, algorithm="ES256", headers={"typ": CHECKPOINT_TYP, "kid": kid})


def planted_platform_key(app: Any) -> tuple[str, Any]:
    """A key pair of the attacker's, written into `signing_key` as a retired platform key (no master key needed)."""
    private = generate_private_key("ES256")
    jwk = public_jwk(private.public_key())
    kid = thumbprint(jwk)
    with app.app_context():
        db.session.add(SigningKey(kid=kid, purpose="platform", department=None, alg="ES256", origin="local",
                                  status="retired", public_jwk={**jwk, "kid": kid, "use": "sig", "alg": "ES256"},
                                  private_key_enc=None, created_at=START, retired_at=START))
        db.session.commit()
    return kid, private


def resign(app: Any, checkpoint_id: int, **values: str) -> None:
    """Overwrite a checkpoint row's columns (signature, kid, chain_hash)."""
    execute(app, sa.update(AuditCheckpoint).where(AuditCheckpoint.id == checkpoint_id).values(**values))


def assert_names_checkpoint(app: Any, runner: Any, seq: int, problem: str, checkpoint_id: int) -> None:
    assert_broken_at(app, runner, seq, problem)
    assert report(app).checkpoint_id == checkpoint_id
    assert f"checkpoint #{checkpoint_id}" in runner.invoke(args=["audit", "verify"]).output


def test_an_untouched_chain_with_checkpoints_verifies_and_names_the_newest(app, runner, signed_chain):
    result = report(app)
    assert (result.ok, result.checked, result.checkpoints, result.newest_checkpoint_seq) == (
        True, signed_chain.head_seq, 2, signed_chain.newer.seq)
    cli = runner.invoke(args=["audit", "verify"])
    assert cli.exit_code == 0, cli.output
    assert f"2 signed checkpoints, newest at seq {signed_chain.newer.seq}" in cli.output


def test_each_checkpoint_is_recorded_by_the_event_right_after_the_head_it_signed(app, signed_chain):
    for checkpoint in (signed_chain.older, signed_chain.newer):
        event = stored_event(app, checkpoint.seq + 1)
        assert (event.action, event.object_id) == ("audit.checkpoint", str(checkpoint.seq))
        assert event.details == {"chain_hash": checkpoint.chain_hash}


def test_a_garbage_checkpoint_signature_fails_verification(app, runner, signed_chain):
    resign(app, signed_chain.newer.id, signature="garbage")
    assert_names_checkpoint(app, runner, signed_chain.newer.seq, "checkpoint_forged", signed_chain.newer.id)


def test_another_checkpoints_genuine_signature_does_not_cover_a_checkpoint(app, runner, signed_chain):
    resign(app, signed_chain.newer.id, signature=signed_chain.older.signature)
    assert_names_checkpoint(app, runner, signed_chain.newer.seq, "checkpoint_forged", signed_chain.newer.id)


def test_a_checkpoint_signed_by_a_department_key_is_forged(app, runner, signed_chain):
    newer = signed_chain.newer
    with app.app_context():
        store = keystore()
        department_key = db.session.scalars(sa.select(SigningKey).where(SigningKey.purpose == "certificate")).first()
        signature = store.sign_jwt(department_key, {"seq": newer.seq, "chain_hash": newer.chain_hash, "iat": 0},
                                   headers={"typ": CHECKPOINT_TYP})
        kid = department_key.kid
    resign(app, newer.id, signature=signature, kid=kid)
    assert_names_checkpoint(app, runner, newer.seq, "checkpoint_forged", newer.id)


def test_a_checkpoint_signed_by_a_platform_key_row_planted_in_the_database_is_forged(app, runner, signed_chain):
    newer = signed_chain.newer
    kid, private = planted_platform_key(app)
    signature = foreign_signature({"seq": newer.seq, "chain_hash": newer.chain_hash, "iat": 0}, kid=kid,
                                  private=private)
    resign(app, newer.id, signature=signature, kid=kid)
    assert_names_checkpoint(app, runner, newer.seq, "checkpoint_forged", newer.id)


def test_a_checkpoint_signed_by_a_key_swapped_into_the_platform_keys_row_is_forged(app, runner, signed_chain):
    """The genuine platform key's row keeps its kid and wrapped private part, its public JWK replaced."""
    newer = signed_chain.newer
    private = generate_private_key("ES256")
    with app.app_context():
        key = db.session.scalars(sa.select(SigningKey).where(SigningKey.kid == newer.kid)).one()
        key.public_jwk = {**public_jwk(private.public_key()), "kid": newer.kid, "use": "sig", "alg": "ES256"}
        db.session.commit()
    signature = foreign_signature({"seq": newer.seq, "chain_hash": newer.chain_hash, "iat": 0}, kid=newer.kid,
                                  private=private)
    resign(app, newer.id, signature=signature)
    assert_names_checkpoint(app, runner, newer.seq, "checkpoint_forged", newer.id)


def test_a_checkpoint_row_beyond_the_chain_with_a_garbage_signature_fails(app, runner, signed_chain):
    with app.app_context():
        db.session.add(AuditCheckpoint(seq=999, chain_hash="ab" * 32, signature="e30.e30.sig",
                                       kid=keystore().active_key("platform").kid, created_at=START))
        db.session.commit()
        forged_id = db.session.scalar(sa.select(AuditCheckpoint.id).where(AuditCheckpoint.seq == 999))
    assert_names_checkpoint(app, runner, 999, "checkpoint_forged", forged_id)


def test_cutting_the_chain_short_and_deleting_the_checkpoint_rows_fails(app, runner, signed_chain):
    """The issue's reproduction: the newer checkpoint and its record are cut off, every checkpoint row deleted; the
    chain still records the older checkpoint, whose row is gone."""
    cut_short(app, signed_chain.newer.seq - 2)
    execute(app, "DELETE FROM audit_checkpoint")
    assert_broken_at(app, runner, signed_chain.older.seq + 1, "checkpoint_missing")
    assert report(app).checkpoint_seq == signed_chain.older.seq


def test_cutting_the_chain_short_and_defacing_the_newest_checkpoint_fails(app, runner, signed_chain):
    cut_short(app, signed_chain.newer.seq - 2)
    resign(app, signed_chain.newer.id, signature="garbage")
    assert_names_checkpoint(app, runner, signed_chain.newer.seq, "checkpoint_forged", signed_chain.newer.id)


def test_cutting_the_chain_short_behind_the_newest_checkpoint_is_a_truncated_tail(app, runner, signed_chain):
    cut_short(app, signed_chain.newer.seq - 2)
    assert_broken_at(app, runner, signed_chain.newer.seq - 1, "truncated")
    assert report(app).checkpoint_id == signed_chain.newer.id


def test_deleting_a_checkpoint_row_fails_naming_the_checkpoint_the_chain_records(app, runner, signed_chain):
    execute(app, "DELETE FROM audit_checkpoint WHERE id = :id", id=signed_chain.older.id)
    assert_broken_at(app, runner, signed_chain.older.seq + 1, "checkpoint_missing")
    assert f"checkpoint of seq {signed_chain.older.seq}" in runner.invoke(args=["audit", "verify"]).output


def test_rewriting_the_whole_chain_disagrees_with_the_signed_checkpoints(app, runner, signed_chain):
    rehash(app, edit={2: {"actor_id": "someone-else"}})
    assert_names_checkpoint(app, runner, signed_chain.older.seq, "checkpoint_mismatch", signed_chain.older.id)


def test_rewriting_the_chain_and_resigning_its_checkpoints_with_a_planted_key_fails(app, runner, signed_chain):
    """Someone with database access but without the platform key rewrites the chain and signs checkpoints for it
    with a key of their own, written into the key table."""
    rehash(app, edit={2: {"actor_id": "someone-else"}})
    kid, private = planted_platform_key(app)
    for checkpoint in (signed_chain.older, signed_chain.newer):
        new_hash = stored_event(app, checkpoint.seq).chain_hash
        signature = foreign_signature({"seq": checkpoint.seq, "chain_hash": new_hash, "iat": 0}, kid=kid,
                                      private=private)
        resign(app, checkpoint.id, signature=signature, kid=kid, chain_hash=new_hash)
    assert_names_checkpoint(app, runner, signed_chain.older.seq, "checkpoint_forged", signed_chain.older.id)


def test_a_checkpoint_event_rewritten_to_name_another_seq_still_needs_its_signed_row(app, runner, signed_chain):
    """The older checkpoint's record is pointed elsewhere and the chain rehashed after it; the newer row deleted."""
    execute(app, "DELETE FROM audit_checkpoint WHERE id = :id", id=signed_chain.newer.id)
    rehash(app, edit={signed_chain.older.seq + 1: {"object_id": "999"}})
    assert_broken_at(app, runner, signed_chain.older.seq + 1, "checkpoint_missing")


def test_a_signed_checkpoint_the_chain_no_longer_records_fails(app, runner, signed_chain):
    """The chain is rewritten after the newer checkpoint without its record: the row alone still signs a seq the
    rewritten chain agrees with."""
    rehash(app, drop={signed_chain.newer.seq + 1})
    assert_names_checkpoint(app, runner, signed_chain.newer.seq + 1, "checkpoint_unrecorded", signed_chain.newer.id)


def test_checkpoints_signed_before_a_platform_key_rotation_still_verify(app, runner, signed_chain, clock):
    with app.app_context():
        keystore().rotate("platform", None, "ES256", clock())
        db.session.commit()
    sign_checkpoint(runner)
    result = report(app)
    assert (result.ok, result.checkpoints) == (True, 3)
    assert len({checkpoint.kid for checkpoint in checkpoints(app)}) == 2


def test_verify_with_a_master_key_that_does_not_open_the_platform_key_says_so(app, runner, signed_chain):
    app.config["ECERT_MASTER_KEY"] = os.urandom(32)
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert "master key" in result.output
