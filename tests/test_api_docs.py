"""The OpenAPI schema and the interactive docs, which must work without internet access and
need a login unless configured public (DM_API_DOCS_PUBLIC)."""
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import override_settings
from rest_framework.test import APIClient

from tests.helpers import assert_error

SWAGGER_BUNDLE = "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"


def test_schema_lists_every_endpoint_of_the_contract(api):
    response = api("viewer").get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    paths = schema["paths"]
    for path, method in [
        ("/api/machines/", "get"), ("/api/machines/", "post"),
        ("/api/machines/validate/", "post"), ("/api/machines/{machine_id}/", "get"),
        ("/api/machines/{machine_id}/versions/", "get"),
        ("/api/machines/{machine_id}/versions/{version}/", "get"),
        ("/api/machines/{machine_id}/versions/{version}/diagram.svg", "get"),
        ("/api/machines/{machine_id}/versions/{version}/diagram.dot", "get"),
        ("/api/machines/{machine_id}/executions/", "post"), ("/api/executions/", "get"),
        ("/api/executions/{execution_id}/", "get"),
        ("/api/executions/{execution_id}/history/", "get"),
        ("/api/executions/{execution_id}/actions/", "post"),
        ("/api/executions/{execution_id}/cancel/", "post"),
        ("/api/executions/{execution_id}/retry/", "post"),
        ("/api/executions/{execution_id}/diagram.svg", "get"),
    ]:
        operation = paths[path][method]
        assert operation["description"] and operation["summary"], path
        assert "401" in operation["responses"] and "403" in operation["responses"], path
    examples = paths["/api/executions/{execution_id}/actions/"]["post"]["requestBody"]
    assert examples["content"]["application/json"]["examples"]


def test_schema_validates_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file",
                 str(tmp_path / "schema.yaml"))
    assert (tmp_path / "schema.yaml").read_text().startswith("openapi: 3")


def test_docs_page_loads_swagger_from_our_own_static_files(client, make_user):
    client.force_login(make_user("reader"))
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f"/static/{SWAGGER_BUNDLE}" in html and "cdn.jsdelivr.net" not in html
    assert finders.find(SWAGGER_BUNDLE)
    # No inline script (the Content-Security-Policy allows none): it loads its start-up
    # script from the same view.
    assert "<script>" not in html and "/api/docs/?script=" in html
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and b"SwaggerUIBundle" in script.content


def test_schema_and_docs_need_a_login(db, client):
    assert_error(APIClient().get("/api/schema/"), 401, "not_authenticated")
    response = client.get("/api/docs/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/api/docs/"
    assert client.get("/api/docs/?script=").status_code == 302


@override_settings(API_DOCS_PUBLIC=True)
def test_schema_and_docs_can_be_public(db, client):
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200
