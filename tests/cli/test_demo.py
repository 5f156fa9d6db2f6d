"""`flask demo load` (what `make run` runs): catalog, keys, a client and certificates for a demo citizen; idempotent."""

from __future__ import annotations

from backend.cli.demo import DEMO_CITIZEN, DEMO_COMPANY


def test_demo_load_twice_gives_a_demo_citizen_a_wallet_of_three_certificates(app, runner, client):
    first = runner.invoke(args=["demo", "load"])
    assert first.exit_code == 0, first.output
    assert "3 demo certificate(s) issued" in first.output
    second = runner.invoke(args=["demo", "load"])
    assert second.exit_code == 0, second.output
    assert "0 demo certificate(s) issued" in second.output
    login = client.post("/api/v1/auth/login", json={"provider": "dev", **DEMO_CITIZEN, "companies": [DEMO_COMPANY]})
    assert login.status_code == 200
    headers = {"Authorization": f"Bearer {login.get_json()['access_token']}"}
    wallet = client.get("/api/v1/wallet/certificates", headers=headers)
    assert wallet.status_code == 200
    assert len(wallet.get_json()["items"]) == 3
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0
