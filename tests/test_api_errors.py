"""Whatever a client sends, the answer is a 4xx in the one error shape, never a 500."""
import json

import pytest
from django.test import override_settings

from executions.models import Execution
from machines import language
from tests.helpers import CART, assert_error

START = "/api/machines/cart/executions/"


@pytest.fixture
def operator(api, save_machine):
    save_machine(CART)
    return api("operator")


def post_raw(client, body: bytes | str, content_type="application/json", path=START):
    return client.generic("POST", path, body, content_type=content_type)


@pytest.mark.parametrize("body,words", [
    ('{"input": ', "Malformed JSON"),
    ("{'input': {}}", "Malformed JSON"),
    (b'{"input": {"name": "\xff\xfe"}}', "not UTF-8"),
    ('{"input": {"n": 1e400}}', "too large"),
    ('{"input": {"n": NaN}}', "NaN"),
    ('{"input": {"n": -Infinity}}', "Infinity"),
    ('{"input": {"n": ' + "9" * 5000 + "}}", "Invalid JSON"),
    ("[" * 10000 + "]" * 10000, "nested too deeply"),
    ('{"input": ' + '{"a": ' * 70 + "1" + "}" * 70 + "}", "nested too deeply"),
    ('{"input": {"name": "a\\u0000b"}}', "NUL"),
    ('{"input": {"name": "\\ud800"}}', "surrogate"),
])
def test_malformed_bodies_are_400_parse_errors(operator, body, words):
    response = post_raw(operator, body)
    assert words in assert_error(response, 400, "parse_error")["detail"]
    assert not Execution.objects.exists()


def test_big_but_storable_numbers_are_kept(operator):
    big = 10**308  # integers up to the range of a JSON number (a double) are kept exactly
    response = post_raw(operator, '{"input": {"n": ' + str(-big) + ', "f": 0.5}}')
    assert response.status_code == 201
    assert Execution.objects.get().input == {"n": -big, "f": 0.5}


@pytest.mark.parametrize("number", [str(10**309), str(-(10**309)), str(10**4000)])
def test_integers_past_a_json_number_are_refused(operator, number):
    body = assert_error(post_raw(operator, '{"input": {"n": ' + number + '}}'), 400)
    assert "at most 309" in json.dumps(body)
    assert not Execution.objects.exists()


def test_a_body_over_the_limit_is_413(operator):
    body = '{"input": {"blob": "' + "x" * (256 * 1024) + '"}}'
    response = post_raw(operator, body)
    assert "262144 bytes" in assert_error(response, 413, "payload_too_large")["detail"]


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100)
def test_the_limit_comes_from_settings(operator):
    assert post_raw(operator, '{"input": {}}').status_code == 201
    assert_error(post_raw(operator, '{"input": {"x": "' + "y" * 100 + '"}}'), 413)


def test_a_body_over_the_limit_is_413_for_yaml_too(api, db):
    response = post_raw(api("editor"), "x: " + "y" * (256 * 1024), "application/yaml",
                        "/api/machines/")
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain",
    "application/xml",
])
def test_other_content_types_are_415(operator, content_type):
    response = post_raw(operator, "input=1", content_type)
    assert_error(response, 415, "unsupported_media_type")


def test_empty_body_means_defaults(operator):
    assert post_raw(operator, "").status_code == 201


def yaml_bomb(levels: int) -> str:
    """A few hundred bytes of YAML whose aliases expand to 9**(levels+1) items."""
    names = [chr(97 + i) for i in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]"
              for prev, name in zip(names, names[1:], strict=False)]
    return "id: lol\nstart_at: a\n" + "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_without_being_expanded(api, db):
    # 9**8 values if expanded: the check stops counting at the limit and says so. (This
    # asserted the time the request took, user creation included, and failed on a loaded
    # machine: how fast the check is belongs to bench/.)
    response = api("viewer").post("/api/machines/validate/", {"source": yaml_bomb(7)},
                                  format="json")
    assert response.status_code == 200
    assert response.json()["valid"] is False
    assert response.json()["errors"][0]["message"] == (
        f"the definition expands to more than {language.MAX_DOCUMENT_VALUES} values")


def test_a_bad_content_length_is_not_a_500(operator):
    response = operator.generic("POST", START, b'{"input": {}}', content_type="application/json",
                                CONTENT_LENGTH="banana")
    assert response.status_code < 500


def test_a_big_form_body_from_a_session_is_refused_in_the_error_shape(make_user, save_machine):
    """CSRF checking of a session request reads the form through our parsers: 415, not
    Django's HTML 400 for RequestDataTooBig."""
    from rest_framework.test import APIClient

    save_machine(CART)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(make_user("sam", "operator"))
    client.cookies["csrftoken"] = "a" * 32  # so the check goes on to read the form
    response = client.generic("POST", START, "x=" + "y" * (256 * 1024),
                              content_type="application/x-www-form-urlencoded")
    assert_error(response, 415, "unsupported_media_type")


def test_django_s_request_data_too_big_becomes_413():
    from django.core.exceptions import RequestDataTooBig

    from api.errors import exception_handler

    response = exception_handler(RequestDataTooBig("big"), {})
    assert response.status_code == 413 and response.data["type"] == "payload_too_large"


def test_an_exception_an_app_registers_gets_its_status_and_type():
    from api import errors

    class Overbooked(Exception):
        path = "seats"

    class NoSeatsLeft(Overbooked):
        pass

    errors.register(Overbooked, 429, "overbooked")
    errors.register(NoSeatsLeft, 409, "no_seats", describe=lambda exc: (
        "Sold out.", [errors.problem("seats", str(exc), "try tomorrow")], {"free": 0}))
    try:
        plain = errors.exception_handler(Overbooked("Too many at once."), {})
        assert plain.status_code == 429 and plain.data == {
            "type": "overbooked", "detail": "Too many at once.",
            "errors": [{"path": "seats", "message": "Too many at once.", "hint": None}]}
        specific = errors.exception_handler(NoSeatsLeft("none"), {})  # the subclass's own
        assert specific.status_code == 409 and specific.data == {
            "type": "no_seats", "detail": "Sold out.", "free": 0,
            "errors": [{"path": "seats", "message": "none", "hint": "try tomorrow"}]}
    finally:
        errors.REGISTRY.pop(Overbooked)
        errors.REGISTRY.pop(NoSeatsLeft)
    assert errors.exception_handler(Overbooked("x"), {}) is None  # unknown: DRF's 500 path


def test_the_apps_register_their_exceptions_from_ready():
    from api.errors import mapping_for
    from executions import services
    from machines.language import DefinitionError
    from machines.models import MachineVersion
    from machines.services import VersionConflict

    found = {name: (m.status, m.type) for name, m in [
        ("definition", mapping_for(DefinitionError([]))),
        ("conflict", mapping_for(VersionConflict("cart", 2))),
        ("not_available", mapping_for(services.NotAvailable("no", []))),
        ("invalid", mapping_for(services.InvalidRequest("bad"))),
        ("missing", mapping_for(MachineVersion.DoesNotExist()))]}
    assert found == {"definition": (400, "invalid_definition"),
                     "conflict": (409, "version_conflict"),
                     "not_available": (409, "not_available"),
                     "invalid": (400, "invalid_request"), "missing": (404, "not_found")}


def test_the_api_package_imports_no_app_but_in_its_routes():
    """api/ is below the apps: they register with it; only urls.py names their views."""
    import ast
    from pathlib import Path

    for path in (Path(__file__).parent.parent / "api").glob("*.py"):
        if path.name == "urls.py":
            continue
        tree = ast.parse(path.read_text())
        names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names]
        names += [node.module for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module]
        assert not [n for n in names if n.split(".")[0] in ("machines", "executions")], path


def test_a_refused_value_names_where_it_is_in_the_body(operator):
    body = assert_error(post_raw(operator, '{"input": {"items": ["a", "b\\u0000"]}}'), 400,
                        "parse_error")
    assert body["errors"] == [{"path": "input.items[1]",
                               "message": "Text may not contain NUL characters.", "hint": None}]
