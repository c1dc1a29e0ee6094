"""The machines API: list, save, validate, versions, diagrams, roles, error shape."""
import json

import pytest
from rest_framework.test import APIClient

from machines.models import Machine, MachineVersion
from tests.helpers import CART, assert_error


# Roles ------------------------------------------------------------------------------------
def test_anonymous_gets_401_with_a_token_challenge(db):
    response = APIClient().get("/api/machines/")
    body = assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"
    assert "credentials" in body["detail"].lower()


def test_a_bad_token_is_401(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token nope")
    assert_error(client.get("/api/machines/"), 401, "authentication_failed")


def test_user_without_a_role_gets_403_saying_which_role_is_needed(api):
    body = assert_error(api("none").get("/api/machines/"), 403, "permission_denied")
    assert "viewer role" in body["detail"]
    body = assert_error(api("viewer").post("/api/machines/", {"source": CART}, format="json"),
                        403, "permission_denied")
    assert "editor role" in body["detail"]


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_editors_save_versions(api, role):
    response = api(role).post("/api/machines/", {"source": CART}, format="json")
    assert_error(response, 403, "permission_denied")
    assert not Machine.objects.exists()


@pytest.mark.parametrize("role", ["editor", "admin"])
def test_editors_and_superusers_save_versions(api, role):
    response = api(role).post("/api/machines/", {"source": CART}, format="json")
    assert response.status_code == 201


def test_session_login_works_too(client, make_user):
    make_user("vera", "viewer")
    client.login(username="vera", password="pass-123-pass")
    assert client.get("/api/machines/").status_code == 200


# Saving -----------------------------------------------------------------------------------
def test_save_is_201_then_200_for_the_identical_definition(api):
    editor = api("editor")
    first = editor.post("/api/machines/", {"source": CART}, format="json")
    assert first.status_code == 201
    body = first.json()
    assert body["id"] == "cart" and body["version"] == 1 and body["title"] == "Cart"
    assert body["source"] == CART and body["source_format"] == "yaml"
    assert body["definition"]["start_at"] == "open" and body["definition"]["version"] == 1
    assert body["created_by"] == "editor-user"
    assert body["diagram_url"] == "/api/machines/cart/versions/1/diagram.svg"
    again = editor.post("/api/machines/", {"source": CART}, format="json")
    assert again.status_code == 200 and again.json()["version"] == 1
    changed = editor.post("/api/machines/", {"source": CART.replace("Cart", "Basket")},
                          format="json")
    assert changed.status_code == 201 and changed.json()["version"] == 2
    assert MachineVersion.objects.filter(machine_id="cart").count() == 2


def test_save_accepts_the_definition_object_and_yaml_text(api):
    editor = api("editor")
    document = {"id": "tiny", "start_at": "a", "states": {"a": {"return": 1}}}
    response = editor.post("/api/machines/", document, format="json")
    assert response.status_code == 201 and response.json()["source_format"] == "json"
    yaml_body = editor.post("/api/machines/", CART, content_type="application/yaml")
    assert yaml_body.status_code == 201 and yaml_body.json()["source"] == CART


def test_an_explicit_version_with_other_content_is_a_conflict(api):
    editor = api("editor")
    assert editor.post("/api/machines/", {"source": CART + "version: 4\n"},
                       format="json").status_code == 201
    response = editor.post("/api/machines/", {"source": CART.replace("Cart", "X") +
                                              "version: 4\n"}, format="json")
    body = assert_error(response, 409, "version_conflict")
    assert "version 4" in body["detail"].lower() and body["errors"][0]["path"] == "version"


def test_invalid_definition_lists_every_error_with_path_and_hint(api):
    broken = CART.replace("state: closed", "state: closd").replace("start_at: open",
                                                                   "start_at: opn")
    body = assert_error(api("editor").post("/api/machines/", {"source": broken}, format="json"),
                        400, "invalid_definition")
    paths = {e["path"] for e in body["errors"]}
    assert "start_at" in paths and "states.open.actions[1].state" in paths
    assert any("closed" in (e["hint"] or "") for e in body["errors"])
    assert "warnings" in body
    assert not Machine.objects.exists()


@pytest.mark.parametrize("body", [{"source": 5}, {"source": None}, {"source": ["x"]}])
def test_source_of_the_wrong_type_is_400(api, body):
    response = api("editor").post("/api/machines/", body, format="json")
    assert assert_error(response, 400, "validation_error")["errors"][0]["path"] == "source"


@pytest.mark.parametrize("body,type_", [([1, 2], "validation_error"),
                                        (7, "validation_error"), (None, "validation_error"),
                                        ("text", "invalid_definition")])
def test_a_body_that_is_no_object_is_400(api, body, type_):
    response = api("editor").post("/api/machines/", json.dumps(body),
                                  content_type="application/json")
    assert_error(response, 400, type_)


def test_unparseable_yaml_source_is_400_with_its_line(api):
    response = api("editor").post("/api/machines/", {"source": "id: x\nstates: [\n"},
                                  format="json")
    body = assert_error(response, 400, "invalid_definition")
    assert body["errors"][0].get("line")


def test_deeply_nested_yaml_source_is_400_not_500(api):
    response = api("editor").post("/api/machines/", {"source": "x: " + "[" * 5000},
                                  format="json")
    assert response.status_code == 400


# Validate ---------------------------------------------------------------------------------
def test_validate_never_saves(api):
    viewer = api("viewer")
    good = viewer.post("/api/machines/validate/", {"source": CART}, format="json")
    assert good.status_code == 200
    assert good.json() == {"valid": True, "errors": [], "warnings": []}
    bad = viewer.post("/api/machines/validate/", {"source": CART.replace("open:", "opn:", 1)},
                      format="json")
    assert bad.status_code == 200 and bad.json()["valid"] is False
    assert bad.json()["errors"][0]["path"]
    assert not Machine.objects.exists()


def test_validate_reports_warnings(api):
    unreachable = CART + "  lost: {return: 1}\n"
    body = api("viewer").post("/api/machines/validate/", {"source": unreachable},
                              format="json").json()
    assert body["valid"] is True and any(w["path"] == "states.lost" for w in body["warnings"])


# Reading ----------------------------------------------------------------------------------
def test_list_shows_latest_versions_with_counts(api, save_machine):
    save_machine(CART)
    save_machine(CART.replace("Cart", "Cart 2"))
    save_machine({"id": "aaa", "start_at": "a", "states": {"a": {"return": 1}}})
    from executions import services

    services.start("cart", actor="test")
    services.start("cart", actor="test")
    body = api("viewer").get("/api/machines/").json()
    assert [m["id"] for m in body] == ["aaa", "cart"]
    cart = body[1]
    assert cart["version"] == 2 and cart["title"] == "Cart 2" and cart["versions"] == 2
    assert cart["executions"] == {"waiting": 2}
    assert body[0]["executions"] == {}


def test_detail_versions_and_version(api, save_machine):
    save_machine(CART)
    save_machine(CART.replace("Cart", "Cart 2"))
    viewer = api("viewer")
    latest = viewer.get("/api/machines/cart/").json()
    assert latest["version"] == 2 and latest["title"] == "Cart 2"
    assert set(latest) >= {"id", "version", "title", "description", "definition", "source",
                           "created_at", "created_by"}
    versions = viewer.get("/api/machines/cart/versions/").json()
    assert [v["version"] for v in versions] == [2, 1]
    first = viewer.get("/api/machines/cart/versions/1/").json()
    assert first["title"] == "Cart" and first["source"] == CART


@pytest.mark.parametrize("path", [
    "/api/machines/nope/", "/api/machines/nope/versions/", "/api/machines/cart/versions/9/",
    "/api/machines/cart/versions/0/", "/api/machines/cart/versions/99999999999/",
    "/api/machines/cart/versions/2147483648/", "/api/machines/Not%20An%20Id/",
    "/api/machines/cart%00/", "/api/machines/cart/versions/9/diagram.svg",
    "/api/no-such-thing/",
])
def test_unknown_machines_and_versions_are_404_in_the_error_shape(api, save_machine, path):
    save_machine(CART)
    assert_error(api("viewer").get(path), 404, "not_found")


def test_missing_trailing_slash_gets_a_hint(api):
    body = assert_error(api("viewer").get("/api/machines"), 404)
    assert body["errors"][0]["hint"] == "API paths end with a slash: /api/machines/"


def test_a_machine_called_validate_can_be_read(api, save_machine):
    save_machine({"id": "validate", "start_at": "a", "states": {"a": {"return": 1}}})
    assert api("viewer").get("/api/machines/validate/").json()["id"] == "validate"


def test_wrong_method_is_405_in_the_error_shape(api, save_machine):
    save_machine(CART)
    response = api("editor").delete("/api/machines/cart/")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]


# Diagrams ---------------------------------------------------------------------------------
def test_diagram_svg_and_dot(api, save_machine):
    save_machine(CART)
    viewer = api("viewer")
    svg = viewer.get("/api/machines/cart/versions/1/diagram.svg", HTTP_ACCEPT="image/svg+xml")
    assert svg.status_code == 200 and svg["Content-Type"].startswith("image/svg+xml")
    text = svg.content.decode()
    assert text.startswith("<svg") and 'id="state-open"' in text and 'id="edge-open-add"' in text
    dot = viewer.get("/api/machines/cart/versions/1/diagram.dot")
    assert dot.status_code == 200 and dot["Content-Type"].startswith("text/vnd.graphviz")
    assert dot.content.decode().startswith("digraph")


def test_diagram_errors_are_json_whatever_accept_says(api, db):
    response = api("viewer").get("/api/machines/cart/versions/1/diagram.svg",
                                 HTTP_ACCEPT="image/svg+xml")
    assert_error(response, 404, "not_found")
    anonymous = APIClient().get("/api/machines/cart/versions/1/diagram.dot",
                                HTTP_ACCEPT="text/vnd.graphviz")
    assert_error(anonymous, 401)
