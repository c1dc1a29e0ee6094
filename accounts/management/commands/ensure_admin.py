"""Create the first superuser if there is none (used by bin/serve)."""
import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create a superuser when none exists: DM_ADMIN_USER (default 'admin') and "
        "DM_ADMIN_PASSWORD (default: generated and printed once)."
    )

    def handle(self, *args, **options):
        users = get_user_model().objects
        if users.filter(is_superuser=True).exists():
            return
        username = os.environ.get("DM_ADMIN_USER", "admin")
        password = os.environ.get("DM_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        users.create_superuser(username, f"{username}@localhost", password)
        shown = password if "DM_ADMIN_PASSWORD" not in os.environ else "(from DM_ADMIN_PASSWORD)"
        self.stdout.write(
            self.style.SUCCESS(f"Created the admin user: {username} / {shown}  (shown only once)")
        )
