"""`flask audit ...`: verify and checkpoint the audit chain; counter-consent counts."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from backend.audit import chain as audit_service
from backend.cli.base import CommandGroup, failing_cleanly, operator_actor
from backend.core.context import keystore, now
from backend.crypto.encryption import DecryptionError
from backend.extensions import db
from backend.sharing import counter_service

audit_cli = CommandGroup("audit", help="Audit chain: verify and checkpoint.")


@audit_cli.command("verify")
def audit_verify() -> None:
    """Recompute the whole hash chain against the signed checkpoints; names the first problem and its seq.

    Exit code 0 when intact, 2 when a problem was found, 1 when the master key does not open the platform key (the
    checkpoints could not be checked at all).
    """
    keys = keystore()
    try:
        keys.check_platform_key()
    except DecryptionError:
        db.session.rollback()
        click.echo("audit chain NOT VERIFIED: the master key does not open the platform key, so the signed "
                   "checkpoints cannot be checked", err=True)
        sys.exit(1)
    report = audit_service.verify_chain(db.session(), keys)
    db.session.rollback()
    if report.ok:
        newest = ("no signed checkpoint yet" if report.newest_checkpoint_seq is None else
                  f"{report.checkpoints} signed checkpoints, newest at seq {report.newest_checkpoint_seq}")
        click.echo(f"audit chain OK: {report.checked} events, head seq {report.head_seq}; {newest}")
        return
    # Checkpoint signatures are checked before the walk along the chain: no event was verified yet then.
    verified = "" if report.problem is audit_service.Problem.CHECKPOINT_FORGED else \
        f" ({report.checked} events verified before it)"
    click.echo(f"audit chain BROKEN at seq {report.first_bad_seq}: {report.problem} — {report.explanation()}{verified}",
               err=True)
    sys.exit(2)


@audit_cli.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign the current chain head with the platform key."""
    with failing_cleanly():
        cp = audit_service.checkpoint(db.session(), keystore(), actor=operator_actor(), now=now())
        db.session.commit()
    click.echo(f"checkpoint seq {cp.seq} {cp.chain_hash}")


@audit_cli.command("counter-consents")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="from this day (UTC), inclusive")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="to this day (UTC), exclusive")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def audit_counter_consents(since: Any, until: Any, as_json: bool) -> None:
    """Consents given at department counters (第十一条), per department: by SMS code and attested by staff."""
    from datetime import UTC

    counts = counter_service.count_counter_consents(db.session(), since=since and since.replace(tzinfo=UTC),
                                                    until=until and until.replace(tzinfo=UTC))
    db.session.rollback()
    rows = [{"department": c.department_code, "sms_code": c.sms_code, "staff_attested": c.staff_attested}
            for c in counts]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    click.echo(f"{'department':<20} {'sms_code':>9} {'staff_attested':>15}")
    for row in rows:
        click.echo(f"{row['department']:<20} {row['sms_code']:>9} {row['staff_attested']:>15}")
