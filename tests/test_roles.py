"""The viewer / operator / editor groups exist after migrate and after a flush, and every
surface applies the same rule for each role."""
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client

from accounts import roles


def permissions_of(name):
    group = Group.objects.get(name=name)
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("flush", [False, True])
def test_role_groups_grant_exactly_their_permissions(flush):
    if flush:
        call_command("flush", interactive=False, verbosity=0)
    for role, names in roles.ROLE_PERMISSIONS.items():
        assert permissions_of(role) == set(names)


@pytest.mark.django_db
def test_roles_are_checked_by_permission(make_user, admin_user):
    viewer, operator, editor = (make_user(n, n) for n in ("viewer", "operator", "editor"))
    nobody = make_user("nobody", "none")
    assert [roles.role_of(u) for u in (viewer, operator, editor, nobody, admin_user)] == [
        "viewer", "operator", "editor", "no role", "admin"]
    assert roles.can_view(viewer) and not roles.can_operate(viewer)
    assert roles.can_operate(operator) and not roles.can_edit(operator)
    assert roles.can_edit(editor) and not roles.can_view(nobody)
    # Overriding the execution mode is the editor's rule, not one of its own.
    assert [roles.can_override_mode(u) for u in (viewer, operator, editor, nobody)] == [
        False, False, True, False]


def role_user(name, role=None, **flags):
    """A user in a role's group, without a password (no hashing: fast)."""
    user = get_user_model().objects.create(username=name, **flags)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def allowed(response) -> bool:
    """Let in (any answer but a refusal: 401, 403, or the explorer's login redirect)."""
    return response.status_code not in (302, 401, 403)


@pytest.mark.django_db
def test_the_api_the_explorer_and_the_admin_apply_one_rule_per_role(rf):
    from django.contrib import admin
    from rest_framework.test import APIClient

    from machines.models import Machine

    users = [role_user("viewer", roles.VIEWER), role_user("operator", roles.OPERATOR),
             role_user("editor", roles.EDITOR), role_user("nobody"),
             role_user("admin", is_superuser=True, is_staff=True),
             role_user("gone", roles.EDITOR, is_active=False)]
    nowhere = f"{uuid.uuid4()}/"
    machine_admin = admin.site._registry[Machine]
    for user in users:
        api, page = APIClient(), Client()
        api.force_authenticate(user)
        page.force_login(user)
        rules = {"view": roles.can_view(user), "operate": roles.can_operate(user),
                 "edit": roles.can_edit(user)}
        request = rf.post("/admin/machines/machine/add/")
        request.user = user
        seen = {
            "view": [allowed(api.get("/api/executions/")), allowed(page.get("/executions/"))],
            "operate": [allowed(api.post(f"/api/executions/{nowhere}cancel/")),
                        allowed(page.post(f"/executions/{nowhere}cancel/"))],
            "edit": [allowed(api.post("/api/machines/", {}, format="json")),
                     machine_admin.has_add_permission(request)],
        }
        assert seen == {kind: [rule, rule] for kind, rule in rules.items()}, user.username
    assert [roles.role_of(user) for user in users] == [
        "viewer", "operator", "editor", "no role", "admin", "no role"]
