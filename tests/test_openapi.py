"""The OpenAPI 3 schema of the account API is valid, complete, and its docs need no CDN."""

import re

import pytest
import yaml
from django.contrib.staticfiles import finders
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db

EXPECTED_PATHS = {
    "/api/v1/account/", "/api/v1/providers/", "/api/v1/stats/", "/api/v1/routes/", "/api/v1/routes/{id}/",
    "/api/v1/routes/{id}/balance/", "/api/v1/routes/{id}/test-sms/", "/api/v1/routes/reorder/",
    "/api/v1/deliveries/", "/api/v1/deliveries/{id}/", "/api/v1/limits/", "/api/v1/alerts/",
    "/api/v1/templates/", "/api/v1/templates/{id}/", "/api/v1/templates/markers/", "/api/v1/templates/preview/",
    "/api/v1/crm/cards/{entity_type}/{entity_id}/", "/api/v1/crm/sends/",
    "/api/v1/crm/activity/", "/api/v1/crm/list-sends/", "/api/v1/crm/list-sends/preview/",
    "/api/v1/crm/list-sends/{send_id}/", "/api/v1/crm/list-sends/{send_id}/cancel/",
    "/api/v1/pipeline/", "/api/v1/pipeline/key/",
}


@pytest.fixture
def schema(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


def test_the_schema_is_valid_openapi_3(schema):
    validate(schema)
    assert schema["openapi"].startswith("3.")


def test_the_schema_describes_every_endpoint_and_the_token(schema):
    assert set(schema["paths"]) == EXPECTED_PATHS
    assert schema["components"]["securitySchemes"]["amoToken"] == {
        "type": "apiKey", "in": "header", "name": "X-Auth-Token",
        "description": schema["components"]["securitySchemes"]["amoToken"]["description"]}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation["security"] == [{"amoToken": []}], (path, method)
            assert "401" in operation["responses"], (path, method)


def test_secrets_are_write_only_in_the_schema(schema):
    route = schema["components"]["schemas"]["Route"]["properties"]
    assert "credentials" not in route and "secrets_set" in route
    assert "credentials" in schema["components"]["schemas"]["RouteRequest"]["properties"]


@pytest.mark.parametrize("url", ["/api/docs/", "/api/redoc/"])
def test_the_docs_load_their_assets_from_our_own_static_files(client, url):
    response = client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))], assets
    for asset in assets:
        if asset.startswith("/static/"):
            assert finders.find(asset.removeprefix("/static/").split("?")[0]), asset
