"""The site's own error pages, the favicon, and the top bar's Admin link (issue 15)."""
import pytest
from django.test import Client, override_settings
from django.urls import path

from workflow_site import urls as site_urls


def boom(request):
    raise RuntimeError("a bug")


def denied(request):
    from django.core.exceptions import PermissionDenied

    raise PermissionDenied("Only operators may cancel executions.")


urlpatterns = [
    *site_urls.urlpatterns,
    path("test-boom/", boom),
    path("test-denied/", denied),
]
handler403 = site_urls.handler403
handler404 = site_urls.handler404
handler500 = site_urls.handler500


def test_unknown_pages_get_the_branded_404(client, admin_user):
    client.force_login(admin_user)
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "There is no page here" in html and "/no/such/page/" in html
    assert "Data Machines" in html and 'rel="icon"' in html
    assert "admin" in html  # the top bar knows who is signed in


def test_the_404_escapes_the_path(client, db):
    response = client.get("/<script>alert(1)</script>/")
    assert response.status_code == 404
    assert b"<script>alert(1)</script>" not in response.content


@override_settings(ROOT_URLCONF=__name__)
def test_permission_denied_gets_the_branded_403_with_its_reason(client, make_user):
    client.force_login(make_user("vera", "viewer"))
    response = client.get("/test-denied/")
    assert response.status_code == 403
    html = response.content.decode()
    assert "You are not allowed to do this" in html
    assert "Only operators may cancel executions." in html and "vera" in html


@override_settings(ROOT_URLCONF=__name__)
def test_a_server_error_gets_the_branded_500_without_a_database(db, django_assert_num_queries):
    client = Client(raise_request_exception=False)
    from workflow_site import errors

    with django_assert_num_queries(0):
        response = errors.server_error(None)
    assert response.status_code == 500
    assert b"Something went wrong on our side" in response.content
    response = client.get("/test-boom/")
    assert response.status_code == 500
    assert b"Something went wrong on our side" in response.content
    assert b"dm.css" in response.content and b"favicon.svg" in response.content


def test_the_500_page_falls_back_to_plain_words_when_its_template_fails(monkeypatch):
    from workflow_site import errors

    def broken(name):
        raise OSError("templates are gone")

    monkeypatch.setattr(errors.loader, "get_template", broken)
    response = errors.server_error(None)
    assert response.status_code == 500
    assert b"Something went wrong on our side" in response.content


def test_the_favicon_is_served_at_the_root_and_linked(client, admin_user):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert b"<svg" in response.content and "max-age" in response["Cache-Control"]
    assert client.post("/favicon.ico").status_code == 405
    client.force_login(admin_user)
    assert b'href="/static/favicon.svg"' in client.get("/machines/").content


@pytest.mark.parametrize(
    ("role", "staff", "sees_admin"),
    [("viewer", False, False), ("operator", False, False), ("editor", False, True),
     ("viewer", True, True), ("none", False, False)],
)
def test_the_admin_link_shows_only_to_who_can_use_the_admin(client, make_user, role, staff,
                                                            sees_admin):
    user = make_user("u1", role)
    user.is_staff = staff
    user.save()
    client.force_login(user)
    response = client.get("/machines/")
    assert (b'href="/admin/"' in response.content) is sees_admin
    if sees_admin:
        assert client.get("/admin/").status_code == 200
    else:
        assert client.get("/admin/").status_code == 302  # to the admin's login


def test_editors_without_staff_get_the_edit_link_on_a_machine_page(client, make_user,
                                                                   save_machine):
    save_machine("order.yaml")
    client.force_login(make_user("edna", "editor"))
    assert b"Edit in the admin" in client.get("/machines/order/").content
    client.force_login(make_user("otto", "operator"))
    assert b"Edit in the admin" not in client.get("/machines/order/").content
