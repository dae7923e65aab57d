"""The served OpenAPI document describes every route, its status codes and the one error body."""

from __future__ import annotations

import httpx


async def test_openapi_documents_every_route_and_error_status(api: httpx.AsyncClient) -> None:
    response = await api.get("/schema/openapi.json", headers={"X-API-Key": ""})
    assert response.status_code == 200
    document = response.json()
    paths = document["paths"]
    expected = {
        ("/api/v1/subscriptions", "post"): {"200", "201", "400", "401", "403", "503"},
        ("/api/v1/subscriptions", "get"): {"200", "400", "401", "403", "503"},
        ("/api/v1/subscriptions/{subscription_id}", "get"): {"200", "400", "401", "403", "404", "503"},
        ("/api/v1/subscriptions/{subscription_id}", "delete"): {"200", "400", "401", "403", "404", "503"},
        ("/api/v1/subscriptions/by-service/{service}", "delete"): {"200", "400", "401", "403", "503"},
        ("/api/v1/audit", "get"): {"200", "400", "401", "403", "503"},
        ("/api/v1/balances", "get"): {"200", "401", "503"},
        ("/api/v1/balances/history", "get"): {"200", "400", "401", "503"},
        ("/health", "get"): {"200", "503"},
    }
    for (path, method), statuses in expected.items():
        documented = set(paths[path][method]["responses"])
        assert statuses <= documented, (path, method, documented)
    assert "ErrorBody" in document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
