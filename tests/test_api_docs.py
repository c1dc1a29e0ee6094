"""The OpenAPI schema and the interactive docs, which must work without internet access."""
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from rest_framework.test import APIClient

SWAGGER_BUNDLE = "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"


def test_schema_lists_every_endpoint_of_the_contract(db):
    response = APIClient().get("/api/schema/")
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


def test_docs_page_loads_swagger_from_our_own_static_files(db):
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f"/static/{SWAGGER_BUNDLE}" in html and "cdn.jsdelivr.net" not in html
    assert finders.find(SWAGGER_BUNDLE)
