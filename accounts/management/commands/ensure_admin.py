"""Create the first superuser if there is none (used by bin/serve)."""
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

PASSWORD_FILE = ".admin-password"  # in the checkout, ignored by git


class Command(BaseCommand):
    help = (
        "Create a superuser when none exists: DM_ADMIN_USER (default 'admin') and "
        "DM_ADMIN_PASSWORD (default: generated, printed and saved in .admin-password)."
    )

    def handle(self, *args, **options):
        users = get_user_model().objects
        if users.filter(is_superuser=True).exists():
            return
        username = os.environ.get("DM_ADMIN_USER", "admin")
        if os.environ.get("DM_ADMIN_PASSWORD"):
            users.create_superuser(username, f"{username}@localhost",
                                   os.environ["DM_ADMIN_PASSWORD"])
            self.stdout.write(self.style.SUCCESS(
                f"Created the admin user {username!r} with the password in DM_ADMIN_PASSWORD"))
            return
        password = secrets.token_urlsafe(12)
        users.create_superuser(username, f"{username}@localhost", password)
        path = settings.BASE_DIR / PASSWORD_FILE
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(f"{username} {password}\n")
            where = f"  (also saved in {path})"
        except OSError:
            where = "  (write it down: it is not shown again)"
        self.stdout.write(self.style.SUCCESS(
            f"Created the admin user: {username} / {password}{where}"))
