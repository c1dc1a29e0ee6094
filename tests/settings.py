"""The settings tests run with (pyproject.toml): the project's own, with a secret key made
for the test run when none is set, since the settings refuse to run without one unless
DEBUG is on. Set in the environment, so the processes tests start (gunicorn, qcluster,
run_timers, bin/serve) get the same key."""
import os
import secrets

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-" + secrets.token_urlsafe(40))

from workflow_site.settings import *  # noqa: E402,F403
