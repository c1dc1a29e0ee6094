"""Schemathesis over the project's own OpenAPI schema against a live gunicorn server.

Positive and negative requests for every operation, authenticated as an editor (the role
that may do everything the API offers; the token also fetches the schema, which needs a
login): no 5xx, and every answer conforms to the schema (status code documented, content
type, body). Bounded: a few examples per operation.
"""
import os
import socket
import subprocess
import sys

import httpx
import pytest
from rest_framework.authtoken.models import Token

from tests.helpers import CART, ROOT, subprocess_database_url, wait_until

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")
MAX_EXAMPLES = int(os.environ.get("DM_FUZZ_EXAMPLES", 25))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_server_url(transactional_db):
    """gunicorn on a free port, serving the test database."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": subprocess_database_url()}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "workflow_site.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "2", "--threads", "4", "--timeout", "60", "--log-level", "warning",
         "--limit-request-line", "0"],  # fuzzed query strings pass gunicorn's 4 KiB line limit
        cwd=ROOT, env=env, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answering():
        assert server.poll() is None, "gunicorn exited"
        try:
            # the schema needs a login: 401 means the server answers
            return httpx.get(f"{url}/api/schema/", timeout=2).status_code in (200, 401)
        except httpx.TransportError:
            return False

    wait_until(answering, 30, "gunicorn did not start", interval=0.2)
    yield url
    server.terminate()
    server.wait(timeout=20)


def test_no_5xx_and_every_answer_conforms_to_the_schema(live_server_url, make_user, save_machine,
                                                        tmp_path):
    save_machine(CART)
    save_machine("order.yaml")
    token = Token.objects.create(user=make_user("fuzzer", "editor"))
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{live_server_url}/api/schema/",
         "--header", f"Authorization: Token {token.key}", "--checks", CHECKS,
         "--max-examples", str(MAX_EXAMPLES), "--phases", "examples,coverage,fuzzing",
         "--seed", "1", "--workers", "1", "--request-timeout", "45",
         "--generation-database", "none", "--no-color", "--warnings", "off"],
        cwd=tmp_path, capture_output=True, text=True, timeout=110,  # its cache goes there
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
