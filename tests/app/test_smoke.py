"""The app starts, answers health checks and speaks the one error shape."""


def test_healthz_checks_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_token_and_catalog_round_trip(dept_client):
    response = dept_client.http.get("/gov/v1/catalog/types", headers=dept_client.headers())
    assert response.status_code == 200
    assert len(response.get_json()["items"]) >= 6
