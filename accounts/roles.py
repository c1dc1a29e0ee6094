"""The three roles of api.md, as Django groups, and the checks every surface uses.

viewer reads everything; operator also starts, triggers, cancels and retries executions;
editor also saves machine versions and may start executions with mocks or with another
execution mode than the machine's. Superusers can
do everything. Roles are groups (created by a migration), so the admin assigns them.
"""
VIEWER, OPERATOR, EDITOR = "viewer", "operator", "editor"

VIEW_PERMISSIONS = [
    "machines.view_machine",
    "machines.view_machineversion",
    "executions.view_execution",
    "executions.view_historyentry",
]
OPERATE_PERMISSIONS = ["executions.operate_execution"]
EDIT_PERMISSIONS = ["machines.add_machine", "machines.add_machineversion"]

ROLE_PERMISSIONS = {
    VIEWER: VIEW_PERMISSIONS,
    OPERATOR: VIEW_PERMISSIONS + OPERATE_PERMISSIONS,
    EDITOR: VIEW_PERMISSIONS + OPERATE_PERMISSIONS + EDIT_PERMISSIONS,
}


def _granted(user, permission: str) -> bool:
    """The one rule behind every role check (API, explorer, admin): an active, signed-in
    user whose groups grant the permission (superusers have them all)."""
    if not (user.is_authenticated and user.is_active):
        return False
    return user.is_superuser or permission in _permissions(user)


def _permissions(user) -> frozenset[str]:
    """`app_label.codename` of every permission the user has, directly or through a group:
    what ModelBackend.has_perm checks, read in one query instead of two (and written in SQL:
    the ORM took longer to compile the query than the database to answer it), once per user
    object (a request loads its user afresh, so a change of role counts at the next one)."""
    found = getattr(user, "_role_permissions", None)
    if found is None:
        from django.contrib.auth.models import Group, Permission
        from django.contrib.contenttypes.models import ContentType
        from django.db import connections

        meta = user._meta
        direct = meta.get_field("user_permissions").remote_field.through._meta
        groups = meta.get_field("groups").remote_field.through._meta
        granted = Group._meta.get_field("permissions").remote_field.through._meta
        sql = (
            f"SELECT ct.app_label, p.codename FROM {Permission._meta.db_table} p "
            f"JOIN {ContentType._meta.db_table} ct ON ct.id = p.content_type_id "
            f"WHERE p.id IN (SELECT permission_id FROM {direct.db_table} WHERE "
            f"{direct.get_field('user').column} = %s UNION SELECT gp.permission_id FROM "
            f"{granted.db_table} gp JOIN {groups.db_table} ug ON ug.group_id = gp.group_id "
            f"WHERE ug.{groups.get_field('user').column} = %s)")
        with connections[user._state.db or "default"].cursor() as cursor:
            cursor.execute(sql, [user.pk, user.pk])
            found = frozenset(f"{app}.{codename}" for app, codename in cursor.fetchall())
        user._role_permissions = found
    return found


def can_view(user) -> bool:
    return _granted(user, "executions.view_execution")


def can_operate(user) -> bool:
    return _granted(user, "executions.operate_execution")


def can_edit(user) -> bool:
    """Editors write machines, whose expressions are code: they need add_machineversion."""
    return _granted(user, "machines.add_machineversion")


def can_override_mode(user) -> bool:
    """Forcing `mode` (sync runs the machine's code in the web process, holding a web thread
    for up to its timeout_seconds) is the editor's rule, like mocks: not a rule of its own."""
    return can_edit(user)


def actor_of(user, *, via_token: bool = False) -> str:
    """How history names who did something: `user:alice`, or `token:alice` through the API
    with a token. The one spelling every surface uses."""
    return f"{'token' if via_token else 'user'}:{user.get_username()}"


def role_of(user) -> str:
    """The highest role a user has, for display."""
    if not user.is_authenticated:
        return "anonymous"
    if user.is_superuser:
        return "admin"
    for role, check in ((EDITOR, can_edit), (OPERATOR, can_operate), (VIEWER, can_view)):
        if check(user):
            return role
    return "no role"


def ensure_role_groups(Group, Permission) -> bool:
    """Create the three groups with their permissions (idempotent).

    Takes the model classes so the migration can pass its historical models; the
    post_migrate handler passes the real ones, which also restores the groups after a
    database flush (as transactional tests do). Returns False, changing nothing, while
    some of the permissions do not exist yet.
    """
    wanted = {name for names in ROLE_PERMISSIONS.values() for name in names}
    found = {
        f"{app_label}.{codename}": pk
        for pk, app_label, codename in Permission.objects.filter(
            content_type__app_label__in={name.split(".")[0] for name in wanted},
            codename__in={name.split(".")[1] for name in wanted},
        ).values_list("pk", "content_type__app_label", "codename")
    }
    if not wanted <= found.keys():
        return False
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(*(found[name] for name in names))
    return True
