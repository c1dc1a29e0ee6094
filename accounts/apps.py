from django.apps import AppConfig
from django.db.models.signals import post_migrate


def restore_role_groups(sender, **kwargs):
    from django.contrib.auth.models import Group, Permission

    from accounts.roles import ensure_role_groups

    ensure_role_groups(Group, Permission)


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and roles"

    def ready(self):
        # After every migrate or flush (sent per app with models, not for this one): the
        # groups are restored as soon as every permission they grant exists again.
        post_migrate.connect(restore_role_groups, dispatch_uid="accounts.restore_role_groups")
