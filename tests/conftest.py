"""Shared fixtures. Tests run against the database named by DATABASE_URL (SQLite by default)."""
import pytest
from django.contrib.auth import get_user_model


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("admin", "admin@example.com", "admin-pass-123")
