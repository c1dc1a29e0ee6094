"""manage.py create_api_token USERNAME [--reset]: print the user's API token."""
from django.core.exceptions import ObjectDoesNotExist
from django.core.management.base import BaseCommand, CommandError

from accounts.services import api_token


class Command(BaseCommand):
    help = "Print the API token of a user, creating it if needed (--reset replaces it)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--reset", action="store_true", help="revoke the current token and make a new one"
        )

    def handle(self, *args, username, reset, **options):
        try:
            key = api_token(username, reset=reset)
        except ObjectDoesNotExist:
            raise CommandError(
                f"No user named '{username}'. Create one first (manage.py createsuperuser)."
            ) from None
        self.stdout.write(key)
