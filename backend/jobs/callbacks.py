"""Delivering access-request callbacks at the edge: after the deciding request's commit, and from the job."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from flask import Flask, current_app

from backend.adapters.callbacks import CallbackSender
from backend.core.context import keystore, now
from backend.extensions import db
from backend.sharing import request_callbacks

log = logging.getLogger("ecert.callbacks")


def callback_sender() -> CallbackSender:
    """The app's sender (tests may put their own under app.extensions['ecert.callback_sender'])."""
    sender: CallbackSender | None = current_app.extensions.get("ecert.callback_sender")
    if sender is None:
        sender = CallbackSender(timeout=current_app.config["ECERT_CALLBACK_TIMEOUT"])
        current_app.extensions["ecert.callback_sender"] = sender
    return sender


def deliver(due: Callable[[], list[int]]) -> Counter[str]:
    """For each of the due access requests' callbacks: claim it (commit), post it, record the outcome (commit).
    Each is claimed right before its POST, never all first: the lease (60 s) covers one POST (at most
    ECERT_CALLBACK_TIMEOUT, 30 s), not a run of them, after which another node's job would take the rest over and
    post them as well. One that another node claimed meanwhile is skipped. Needs an app context."""
    candidates = due()
    db.session.commit()
    outcomes: Counter[str] = Counter()
    config = current_app.config
    for access_request_id in candidates:
        item = request_callbacks.claim_one(db.session(), access_request_id, now=now())
        db.session.commit()
        if item is None:
            continue
        result = request_callbacks.send(keystore(), callback_sender(), item, issuer=config["ECERT_PUBLIC_URL"],
                                        now=now())
        outcomes[request_callbacks.record_outcome(db.session(), item, result, now=now(),
                                                  max_attempts=config["ECERT_CALLBACK_MAX_ATTEMPTS"])] += 1
        db.session.commit()
    return outcomes


def deliver_after_response(access_request_id: int) -> Callable[[], None]:
    """For `response.call_on_close`: post the decided request's callback once the response is out (after the
    request's commit). A failure leaves the callback in the outbox for `flask jobs callbacks`; it never raises."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]  # the app, not the proxy

    def run() -> None:
        with app.app_context():
            try:
                deliver(lambda: [access_request_id])
            except Exception:
                db.session.rollback()
                log.exception("callback delivery failed; left for the job",
                              extra={"fields": {"access_request_id": access_request_id}})
            finally:
                db.session.remove()

    return run
