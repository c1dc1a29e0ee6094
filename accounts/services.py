"""Changes to accounts the commands make: API tokens."""
from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.authtoken.models import Token


def api_token(username: str, *, reset: bool = False) -> str:
    """The user's API token, created if needed; `reset` revokes the current one first.
    The user model's DoesNotExist for an unknown user."""
    User = get_user_model()
    user = User.objects.get(**{User.USERNAME_FIELD: username})
    with transaction.atomic():
        if reset:
            Token.objects.filter(user=user).delete()
        token, _ = Token.objects.get_or_create(user=user)
    return token.key
