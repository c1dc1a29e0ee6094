"""The viewer / operator / editor groups exist after migrate and after a flush."""
import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

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
