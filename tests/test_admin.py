"""The admin editor: saving versions, inline errors, permissions, diffs, the live preview."""
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from machines.models import MachineVersion
from machines.services import save_version

TICKET = """\
id: ticket
title: Support ticket
start_at: open
states:
  open:
    actions:
      - id: close
        on: close
        state: closed
  closed:
    return: null
"""
BROKEN = TICKET.replace("state: closed", "state: closd")
CHANGELIST = reverse("admin:machines_machine_changelist")
ADD = reverse("admin:machines_machine_add")


def change_url(machine_id):
    return reverse("admin:machines_machine_change", args=[machine_id])


def staff(username, *perms):
    user = get_user_model().objects.create_user(username, password="pw-12345678", is_staff=True)
    codenames = [p.split(".")[1] for p in perms]
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def editor(db):
    return staff("editor", "machines.add_machineversion", "machines.view_machineversion")


@pytest.fixture
def viewer(db):
    return staff("viewer", "machines.view_machine", "machines.view_machineversion")


@pytest.fixture
def ticket(db):
    return save_version(TICKET)[0]


def test_changelist_shows_latest_version_title_and_count_without_a_query_per_row(
    client, admin_user
):
    client.force_login(admin_user)
    save_version(TICKET)
    save_version(TICKET.replace("Support ticket", "Ticket, renamed"))
    with CaptureQueriesContext(connection) as one_machine:
        page = client.get(CHANGELIST)
    html = page.content.decode()
    assert page.status_code == 200
    assert "Ticket, renamed" in html and '<td class="field-latest_version">2</td>' in html
    assert '<td class="field-versions_count">2</td>' in html
    for n in range(4):
        save_version(TICKET.replace("id: ticket", f"id: ticket-{n}"))
    with CaptureQueriesContext(connection) as five_machines:
        client.get(CHANGELIST)
    assert len(five_machines) == len(one_machine)


def test_changelist_searches_ids_and_titles(client, admin_user, ticket):
    save_version(TICKET.replace("id: ticket", "id: refund").replace("Support ticket", "Refund"))
    client.force_login(admin_user)
    by_title = client.get(CHANGELIST, {"q": "support"}).content.decode()
    assert change_url("ticket") in by_title and change_url("refund") not in by_title
    by_id = client.get(CHANGELIST, {"q": "refund"}).content.decode()
    assert change_url("refund") in by_id and change_url("ticket") not in by_id


def test_add_page_is_an_editor_with_a_starter_source_and_a_preview(client, editor):
    client.force_login(editor)
    page = client.get(ADD)
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="machine-source"' in html and 'spellcheck="false"' in html
    assert "start_at:" in html and 'name="_save"' in html and 'name="_validate"' in html
    assert f'data-preview-url="{reverse("admin:machines_machine_preview")}"' in html


def test_saving_a_new_machine_creates_version_one(client, editor):
    client.force_login(editor)
    response = client.post(ADD, {"source": TICKET, "_save": "1"}, follow=True)
    assert response.redirect_chain[-1][0] == change_url("ticket")
    stored = MachineVersion.objects.get()
    assert (stored.machine_id, stored.version, stored.created_by) == ("ticket", 1, editor)
    assert "Saved ticket version 1." in response.content.decode()


def test_broken_source_shows_errors_inline_keeps_the_text_and_saves_nothing(client, editor):
    client.force_login(editor)
    page = client.post(ADD, {"source": BROKEN, "_save": "1"})
    html = page.content.decode()
    assert page.status_code == 400
    assert "states.open.actions[0].state" in html and "closd" in html
    assert "did you mean" in html.lower()
    assert "state: closd" in html  # the textarea keeps what was typed
    assert 'class="dm-at" data-line="9"' in html  # the error points at its line
    assert not MachineVersion.objects.exists()


def test_change_page_shows_the_latest_source_and_the_versions(client, editor, ticket):
    save_version(TICKET.replace("Support ticket", "Second"))
    client.force_login(editor)
    html = client.get(change_url("ticket")).content.decode()
    assert "title: Second" in html and "version 2" in html
    first = MachineVersion.objects.get(version=1)
    assert reverse("admin:machines_machineversion_change", args=[first.pk]) in html
    assert f'{reverse("admin:machines_machine_diff", args=["ticket"])}?a=1&amp;b=2' in html


def test_saving_a_change_makes_a_new_version_and_an_identical_save_says_so(
    client, editor, ticket
):
    client.force_login(editor)
    changed = TICKET.replace("Support ticket", "Helpdesk ticket")
    response = client.post(change_url("ticket"), {"source": changed, "_save": "1"}, follow=True)
    assert "Saved ticket version 2." in response.content.decode()
    response = client.post(change_url("ticket"), {"source": changed, "_save": "1"}, follow=True)
    assert "No changes: version 2 is unchanged" in response.content.decode()
    assert list(MachineVersion.objects.values_list("version", flat=True)) == [2, 1]
    history = client.get(reverse("admin:machines_machine_history", args=["ticket"]))
    assert "Saved version 2." in history.content.decode()


def test_the_change_page_refuses_a_source_for_another_machine(client, editor, ticket):
    client.force_login(editor)
    other = TICKET.replace("id: ticket", "id: other")
    page = client.post(change_url("ticket"), {"source": other, "_save": "1"})
    assert page.status_code == 400
    assert "edits machine &#x27;ticket&#x27;" in page.content.decode()
    assert MachineVersion.objects.count() == 1


def test_a_version_conflict_is_shown_not_saved(client, editor, ticket):
    client.force_login(editor)
    pinned = TICKET.replace("id: ticket\n", "id: ticket\nversion: 1\n").replace("Support", "X")
    page = client.post(change_url("ticket"), {"source": pinned, "_save": "1"})
    assert page.status_code == 400 and "already exists" in page.content.decode()
    assert MachineVersion.objects.count() == 1


def test_validate_reports_without_saving(client, editor):
    client.force_login(editor)
    page = client.post(ADD, {"source": TICKET, "_validate": "1"})
    assert page.status_code == 200 and "Valid." in page.content.decode()
    assert not MachineVersion.objects.exists()


def test_viewers_see_the_editor_but_cannot_save(client, viewer, ticket):
    client.force_login(viewer)
    page = client.get(change_url("ticket"))
    assert page.status_code == 200 and "title: Support ticket" in page.content.decode()
    assert 'name="_save"' not in page.content.decode()
    changed = TICKET.replace("Support ticket", "Sneaky")
    assert client.post(change_url("ticket"), {"source": changed, "_save": "1"}).status_code == 403
    assert client.get(ADD).status_code == 403
    assert client.post(ADD, {"source": changed, "_save": "1"}).status_code == 403
    assert MachineVersion.objects.count() == 1


def test_staff_without_view_permission_cannot_see_machines(client, db, ticket):
    client.force_login(staff("nobody"))
    assert client.get(change_url("ticket")).status_code == 403


def test_anonymous_users_are_sent_to_the_login_page(client, ticket):
    for url in [CHANGELIST, ADD, change_url("ticket")]:
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]
    preview = client.post(reverse("admin:machines_machine_preview"), {"source": TICKET})
    assert preview.status_code == 302


def test_versions_are_read_only_for_everyone(client, admin_user, ticket):
    client.force_login(admin_user)
    listing = client.get(reverse("admin:machines_machineversion_changelist"))
    assert listing.status_code == 200 and "ticket v1" in listing.content.decode()
    view = client.get(reverse("admin:machines_machineversion_change", args=[ticket.pk]))
    assert view.status_code == 200
    assert "title: Support ticket" in view.content.decode()
    assert 'name="_save"' not in view.content.decode()
    post = client.post(
        reverse("admin:machines_machineversion_change", args=[ticket.pk]), {"title": "Changed"}
    )
    assert post.status_code == 403
    assert client.get(reverse("admin:machines_machineversion_add")).status_code == 403
    delete = reverse("admin:machines_machineversion_delete", args=[ticket.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert MachineVersion.objects.get().title == "Support ticket"


class TestDiff:
    @pytest.fixture
    def two_versions(self, ticket):
        save_version(TICKET.replace("state: closed", "state: done").replace("closed:", "done:"))
        return reverse("admin:machines_machine_diff", args=["ticket"])

    def test_shows_the_two_sources_side_by_side(self, client, viewer, two_versions):
        client.force_login(viewer)
        page = client.get(two_versions, {"a": 1, "b": 2})
        html = page.content.decode()
        assert page.status_code == 200
        assert 'class="diff"' in html and "version 1" in html and "version 2" in html
        assert "closed" in html and "done" in html

    def test_says_when_two_versions_have_the_same_source(self, client, viewer, two_versions):
        client.force_login(viewer)
        page = client.get(two_versions, {"a": 2, "b": 2})
        assert page.status_code == 200 and "have the same source" in page.content.decode()

    def test_without_parameters_offers_a_choice(self, client, viewer, two_versions):
        client.force_login(viewer)
        page = client.get(two_versions)
        assert page.status_code == 200 and "Pick two versions" in page.content.decode()

    @pytest.mark.parametrize("params", [{"a": "x", "b": 2}, {"a": 1}, {"a": 0, "b": 1}])
    def test_malformed_parameters_explain_themselves(self, client, viewer, two_versions, params):
        client.force_login(viewer)
        page = client.get(two_versions, params)
        assert page.status_code == 400
        assert "Choose two version numbers" in page.content.decode()

    def test_a_missing_version_is_named(self, client, viewer, two_versions):
        client.force_login(viewer)
        page = client.get(two_versions, {"a": 1, "b": 9})
        assert page.status_code == 404
        assert "has no version 9; its versions are 1, 2." in page.content.decode()

    def test_an_unknown_machine_is_not_found(self, client, viewer, db):
        client.force_login(viewer)
        url = reverse("admin:machines_machine_diff", args=["nope"])
        assert client.get(url, {"a": 1, "b": 2}).status_code == 404


class TestPreview:
    def test_valid_source_gives_its_diagram(self, client, viewer, ticket):
        client.force_login(viewer)
        url = reverse("admin:machines_machine_preview_object", args=["ticket"])
        data = client.post(url, {"source": TICKET}).json()
        assert data["valid"] is True and data["errors"] == []
        assert "<svg" in data["svg"]

    def test_invalid_source_gives_its_errors(self, client, editor):
        client.force_login(editor)
        data = client.post(reverse("admin:machines_machine_preview"), {"source": BROKEN}).json()
        assert data["valid"] is False and data["svg"] is None
        error = data["errors"][0]
        assert error["path"] == "states.open.actions[0].state" and error["line"] == 9
        assert "closed" in error["hint"] or "closed" in error["message"]

    def test_only_post_is_allowed(self, client, editor):
        client.force_login(editor)
        assert client.get(reverse("admin:machines_machine_preview")).status_code == 405


class TestTheSite:
    """Branding, links both ways, the queue's tables apart, editors without staff (issue 15)."""

    def test_is_branded_and_links_to_the_explorer(self, client, admin_user):
        client.force_login(admin_user)
        html = client.get(reverse("admin:index")).content.decode()
        assert "Data Machines administration" in html and "Django administration" not in html
        assert "| Data Machines admin</title>" in html
        assert 'class="dm-explorer-link"' in html and 'href="/"' in html
        assert 'rel="icon"' in html

    def test_lists_the_product_first_and_the_queue_last_under_its_own_heading(
        self, client, admin_user
    ):
        client.force_login(admin_user)
        apps = client.get(reverse("admin:index")).context["app_list"]
        labels = [app["app_label"] for app in apps]
        assert labels[0] == "machines" and labels[-1] == "django_q"
        assert apps[-1]["name"] == "Queue (operations)"
        assert "Failed tasks" in [m["name"] for m in apps[-1]["models"]]

    def test_an_editor_uses_the_machine_editor_without_being_staff(self, client, make_user):
        user = make_user("edna", "editor")
        assert not user.is_staff
        client.force_login(user)
        index = client.get(reverse("admin:index"))
        assert index.status_code == 200
        assert [app["app_label"] for app in index.context["app_list"]] == [
            "machines", "executions"]  # executions read-only (view permission)
        assert client.get(ADD).status_code == 200
        response = client.post(ADD, {"source": TICKET, "_save": "1"})
        assert response.status_code == 302
        assert MachineVersion.objects.get().created_by == user
        # what an editor may not touch stays closed
        assert client.get(reverse("admin:auth_user_changelist")).status_code == 403

    def test_an_editor_logs_in_through_the_admin_login(self, client, make_user):
        make_user("edna", "editor", password="pw-edna-123")
        make_user("otto", "operator", password="pw-otto-123")
        login = reverse("admin:login")
        ok = client.post(login, {"username": "edna", "password": "pw-edna-123",
                                 "next": reverse("admin:index")})
        assert ok.status_code == 302
        client.logout()
        refused = client.post(login, {"username": "otto", "password": "pw-otto-123"})
        assert refused.status_code == 200 and "staff account" in refused.content.decode()

    @pytest.mark.parametrize("role", ["viewer", "operator", "none"])
    def test_other_roles_without_staff_stay_out(self, client, make_user, role):
        client.force_login(make_user("someone", role))
        assert client.get(reverse("admin:index")).status_code == 302
        assert client.get(ADD).status_code == 302

    def test_an_inactive_editor_stays_out(self, client, make_user):
        user = make_user("gone", "editor")
        user.is_active = False
        user.save()
        client.force_login(user)
        assert client.get(reverse("admin:index")).status_code == 302


def test_the_editor_page_loads_its_code_editor_and_the_files_exist(client, editor, ticket):
    from django.contrib.staticfiles import finders

    client.force_login(editor)
    html = client.get(change_url("ticket")).content.decode()
    for name in ("codemirror.js", "yaml.js", "codemirror.css"):
        path = f"vendor/codemirror-5.65.21/{name}"
        assert f"/static/{path}" in html
        found = finders.find(path)
        assert found, path
        with open(found, encoding="utf-8") as file:
            assert "Marijn Haverbeke" in file.read(400)  # the licence header is kept
    assert 'href="/machines/ticket/"' in html  # to the explorer
    assert 'id="machine-source"' in html  # the textarea stays, for when scripts do not load


def test_version_times_carry_their_date_and_zone_in_the_readers_zone(client, editor, ticket):
    client.force_login(editor)
    client.cookies["dm_tz"] = "Asia/Tokyo"
    saved = ticket.created_at.astimezone(ZoneInfo("Asia/Tokyo"))
    expected = f"{saved:%b} {saved.day}, {saved:%H:%M} JST"
    assert expected in client.get(change_url("ticket")).content.decode()
    listing = client.get(reverse("admin:machines_machineversion_changelist")).content.decode()
    assert expected in listing
