"""Shared fixtures. Tests run against the database named by DATABASE_URL (SQLite by default).

`cluster` starts the real worker processes (django-q2's qcluster and our timer loop) as
subprocesses against the test database, the way bin/serve runs them. Plain helpers (the
Cluster class, wait_until, CART, assert_error) are in tests/helpers.py.
"""
import os

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from tests.helpers import ROOT, Cluster, subprocess_database_url


@pytest.fixture(autouse=True, scope="session")
def fast_password_hasher():
    """Tests hash with MD5: the real hasher takes seconds per user on a loaded machine and
    its strength is no part of what they check."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("admin", "admin@example.com", "admin-pass-123")


@pytest.fixture
def make_user(db):
    """make_user("alice", "operator") -> a user in that role's group ("none" for no role)."""
    from django.contrib.auth.models import Group

    def make(username, role="viewer", password="pass-123-pass"):
        user = get_user_model().objects.create_user(username, f"{username}@example.com", password)
        if role != "none":
            user.groups.add(Group.objects.get(name=role))
        return user

    return make


@pytest.fixture
def api(make_user, db):
    """api("editor") -> an APIClient authenticated with that role's API token."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    def client(role="viewer", username=None):
        username = username or f"{role}-user"
        model = get_user_model()
        user = model.objects.filter(username=username).first()
        if user is None:
            user = (model.objects.create_superuser(username, f"{username}@example.com", "pw-123")
                    if role == "admin" else make_user(username, role))
        token, _ = Token.objects.get_or_create(user=user)
        api_client = APIClient()
        api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        api_client.user = user
        return api_client

    return client


@pytest.fixture
def save_machine(db):
    """save_machine(yaml_text or dict) -> MachineVersion, stored through the real service."""
    from machines.services import save_version

    def save(source):
        if isinstance(source, str) and "\n" not in source and source.endswith(".yaml"):
            source = (ROOT / "examples" / source).read_text()
        return save_version(source)[0]

    return save


@pytest.fixture
def cluster_log(tmp_path):
    """Where the cluster's processes write: DM_CLUSTER_LOG, else the test's tmp directory."""
    return os.environ.get("DM_CLUSTER_LOG") or tmp_path / "cluster.log"


@pytest.fixture
def cluster(transactional_db, cluster_log):
    """A running worker cluster on the test database (ORM broker unless REDIS_URL is set)."""
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "DM_Q_CLUSTER_NAME": _cluster_name(),
        "DM_STEP_LIMIT": os.environ.get("DM_STEP_LIMIT", "1000"),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    cluster = Cluster(env, cluster_log)
    cluster.start()
    yield cluster
    cluster.stop()


def _cluster_name():
    from django.conf import settings

    return settings.Q_CLUSTER["name"]


@pytest.fixture(autouse=True)
def forget_cached_latest_versions():
    """Each test's database starts empty, but a start caches the latest version of each
    machine in the process (executions/runtime/accepting.py): forget them after each test,
    so that a machine id another test saved with other content is read again."""
    yield
    from executions.runtime import store

    store.active.latest_versions.clear()
