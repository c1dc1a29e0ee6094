"""Settings for Data Machines, read from the environment (12-factor).

DATABASE_URL   sqlite:///path or postgres://user@host/db (default: SQLite file db.sqlite3, WAL)
REDIS_URL      when set, django-q2 uses the Redis broker; otherwise the ORM broker
DJANGO_SECRET_KEY, DJANGO_DEBUG, DJANGO_ALLOWED_HOSTS
Security for production (docs/security.md): DM_BEHIND_TLS, DM_HSTS_SECONDS, DM_CSP, login
rate limits (DM_LOGIN_*), DM_API_DOCS_PUBLIC.
"""
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name, default=False):
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DJANGO_DEBUG", False)


def secret_key():
    """DJANGO_SECRET_KEY, else the key bin/serve wrote for this checkout (.secret_key, or the
    file DJANGO_SECRET_KEY_FILE names). Without either, only DEBUG may run, on a dev key:
    anything else refuses to start rather than sign sessions with a key everyone knows."""
    key = os.environ.get("DJANGO_SECRET_KEY", "").strip()
    path = Path(os.environ.get("DJANGO_SECRET_KEY_FILE") or BASE_DIR / ".secret_key")
    if not key and path.is_file():
        key = path.read_text().strip()
    if key and key != INSECURE_DEV_KEY:
        if not DEBUG and len(key) < 32:
            raise ImproperlyConfigured(
                "DJANGO_SECRET_KEY is too short (fewer than 32 characters): use a long random "
                "value, e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'")
        return key
    if DEBUG:
        return INSECURE_DEV_KEY
    raise ImproperlyConfigured(
        f"DJANGO_SECRET_KEY is not set (nor a key in {path}) and DJANGO_DEBUG is off: "
        "refusing to run with the insecure default key. Set DJANGO_SECRET_KEY to a long random "
        "value (python -c 'import secrets; print(secrets.token_urlsafe(50))'), or run bin/serve "
        "once (it writes .secret_key for this checkout), or set DJANGO_DEBUG=true to develop.")


INSECURE_DEV_KEY = "insecure-dev-key: set DJANGO_SECRET_KEY in production"
SECRET_KEY = secret_key()


def env_list(name, default=""):
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "workflow_site.apps.DataMachinesAdminConfig",  # the admin, with our site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",  # its templates: the browsable API's filter form
    "django_q",
    "machines",
    "executions",
    "explorer",
    "accounts",  # after the apps whose permissions its roles grant
]

MIDDLEWARE = [
    "workflow_site.overload.ConcurrencyLimitMiddleware",  # first: 503 past capacity, cheaply
    "django.middleware.security.SecurityMiddleware",
    "workflow_site.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.timezones.TimezoneMiddleware",
    "workflow_site.security.LoginRateLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Security for production (docs/security.md). Behind a TLS-terminating proxy that sets
# X-Forwarded-Proto (and strips it from clients), DM_BEHIND_TLS=true makes Django trust it,
# redirect plain HTTP, send HSTS and mark the cookies Secure.
BEHIND_TLS = env_bool("DM_BEHIND_TLS", False)
if BEHIND_TLS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DM_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = int(os.environ.get("DM_HSTS_SECONDS", 365 * 24 * 3600))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DM_HSTS_INCLUDE_SUBDOMAINS", False)
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # the pages send the token from the form, never from the cookie
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Scripts only from our own files (and inline ones carrying the response's nonce); styles may
# be inline (the pages' and Graphviz's style attributes, the admin); nothing may frame us.
CONTENT_SECURITY_POLICY = os.environ.get("DM_CSP", (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
))
# Login rate limit: this many failures for one username from one address in the window
# (seconds) and the login forms answer 429 until the window has passed.
LOGIN_MAX_FAILURES = int(os.environ.get("DM_LOGIN_MAX_FAILURES", 5))
LOGIN_FAILURE_WINDOW = float(os.environ.get("DM_LOGIN_FAILURE_WINDOW", 900))
LOGIN_RATE_LIMITED_PATHS = {"/login/", "/admin/login/"}
LOGIN_RATE_LIMIT_CACHE = "login"
# The API's schema and interactive docs need a login unless DM_API_DOCS_PUBLIC=true.
API_DOCS_PUBLIC = env_bool("DM_API_DOCS_PUBLIC", False)

ROOT_URLCONF = "workflow_site.urls"
WSGI_APPLICATION = "workflow_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite needs WAL + IMMEDIATE transactions + a busy timeout so that the web
# process, qcluster workers and the timer loop can write concurrently without
# "database is locked" (see docs/operations.md). PostgreSQL wants persistent connections.
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=600)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        # Seconds a writer waits for the write lock before "database is locked".
        "timeout": float(os.environ.get("DM_SQLITE_BUSY_TIMEOUT", 20)),
    }
    # A file (not :memory:) so live-server, qcluster and browser tests share the database.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Parameters bound by the server, and a statement run 5 times prepared once per
    # connection: PostgreSQL then plans the runtime's few hot statements once instead of on
    # every run (planning was most of a start's INSERT). Not for a transaction-mode pooler.
    DATABASES["default"]["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 5}
if os.environ.get("DM_TEST_DB_NAME"):  # lets several test runs share one machine
    DATABASES["default"]["TEST"] = {"NAME": os.environ["DM_TEST_DB_NAME"]}
# The login failure counts must be shared by every process: Redis when there is one, else
# files under DM_CACHE_DIR (one host; default .cache/login in the checkout, ignored by git).
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "login": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": os.environ.get("DM_CACHE_DIR") or str(BASE_DIR / ".cache" / "login"),
        "OPTIONS": {"MAX_ENTRIES": 100_000},
    },
}
if os.environ.get("REDIS_URL"):
    CACHES["login"] = {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                       "LOCATION": os.environ["REDIS_URL"], "KEY_PREFIX": "dm-login"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

# Request bodies: inputs are capped (api.md: 413 over the limit).
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("DM_MAX_BODY_BYTES", 256 * 1024))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Data Machines API",
    "DESCRIPTION": "Load state machines, start executions, drive them and read their history.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The interactive docs load Swagger UI from our own static files: no CDN needed.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# django-q2: ORM broker by default, Redis when REDIS_URL is set. save_limit 0 avoids the
# select_for_update over every Success row that makes SQLite lose results under load.
REDIS_URL = os.environ.get("REDIS_URL", "")
Q_CLUSTER = {
    "name": os.environ.get("DM_Q_CLUSTER_NAME", "datamachines"),
    "workers": int(os.environ.get("DM_Q_WORKERS", 2)),
    "timeout": 300,
    "retry": 360,
    "max_attempts": 1,
    "save_limit": -1,
    "ack_failures": True,
    "poll": 0.02,
    # Tasks the ORM broker hands out per poll: 10 raised async executions/s by about half
    # on SQLite and PostgreSQL (docs/benchmarks.md).
    "bulk": int(os.environ.get("DM_Q_BULK", 10)),
    "guard_cycle": 0.1,
    "catch_up": False,
    "label": "Tasks",
}
# IO calls have a queue and a cluster of their own (`Q_CLUSTER_NAME=<name>-io manage.py
# qcluster`, started by bin/serve), so slow services never hold the workers that start and
# advance executions. Its task timeout is above the longest an IO call's work may run
# (300 s + 1, executions/runtime/effects.py), so the call's own bounds end it first.
IO_QUEUE = os.environ.get("DM_IO_QUEUE", f"{Q_CLUSTER['name']}-io")
Q_CLUSTER["ALT_CLUSTERS"] = {
    IO_QUEUE: {"workers": int(os.environ.get("DM_Q_IO_WORKERS", 2)), "timeout": 360,
               "retry": 420},
} if IO_QUEUE else {}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# The runtime (docs/runtime.md).
DATA_MACHINES = {
    # Per-evaluation bounds of the expression sandbox.
    "EXPRESSION_TIME_LIMIT": float(os.environ.get("DM_EXPRESSION_TIME_LIMIT", 1.0)),
    "EXPRESSION_MAX_RESULT_BYTES": int(
        os.environ.get("DM_EXPRESSION_MAX_RESULT_BYTES", 256 * 1024)
    ),
    # Automatic transitions allowed in one advance before "step limit exceeded".
    "STEP_LIMIT": int(os.environ.get("DM_STEP_LIMIT", 1000)),
    # Size bounds of stored values, in characters of compact JSON (expressions/values.py):
    # an input, the whole context of an execution (and a work's output), one history row,
    # and one text of an error (cut with a note beyond it).
    "MAX_INPUT_CHARS": int(os.environ.get("DM_MAX_INPUT_CHARS", 256 * 1024)),
    "MAX_CONTEXT_CHARS": int(os.environ.get("DM_MAX_CONTEXT_CHARS", 1024 * 1024)),
    "MAX_HISTORY_ROW_CHARS": int(os.environ.get("DM_MAX_HISTORY_ROW_CHARS", 2 * 1024 * 1024)),
    "MAX_ERROR_CHARS": int(os.environ.get("DM_MAX_ERROR_CHARS", 10_000)),
    # Timer loop poll interval (seconds).
    "TIMER_POLL_SECONDS": float(os.environ.get("DM_TIMER_POLL_SECONDS", 0.05)),
    # IO calls (docs/runtime.md "IO operations"). Loopback and private ranges are reached
    # unless IO_ALLOW_PRIVATE is off (set DM_IO_ALLOW_PRIVATE=false in production);
    # link-local and cloud metadata addresses never are, unless allowed here by name.
    "IO_ALLOW_PRIVATE": env_bool("DM_IO_ALLOW_PRIVATE", True),
    "IO_ALLOWED_HOSTS": env_list("DM_IO_ALLOWED_HOSTS"),
    "IO_MAX_RESPONSE_BYTES": int(os.environ.get("DM_IO_MAX_RESPONSE_BYTES", 1024 * 1024)),
    # Proxies and netrc from the environment (HTTP_PROXY, HTTPS_PROXY, ~/.netrc, ...).
    "IO_TRUST_ENV": env_bool("DM_IO_TRUST_ENV", False),
    # Calls a web or worker process performs in helper threads for sync runs at once.
    "IO_INLINE_CALLS": int(os.environ.get("DM_IO_INLINE_CALLS", 8)),
    # The queue IO calls are enqueued on (empty: the main queue, no IO cluster needed).
    "IO_QUEUE": IO_QUEUE,
    # What one diagram may cost (docs/diagrams.md "Bounds"): past these a page shows "too
    # large to draw" with the text description, the API answers 422 diagram_too_large.
    "DIAGRAMS": {
        "MAX_STATES": int(os.environ.get("DM_DIAGRAM_MAX_STATES", 200)),
        "MAX_EDGES": int(os.environ.get("DM_DIAGRAM_MAX_EDGES", 1000)),
        "MAX_DOT_BYTES": int(os.environ.get("DM_DIAGRAM_MAX_DOT_BYTES", 512 * 1024)),
        "TIMEOUT_SECONDS": float(os.environ.get("DM_DIAGRAM_TIMEOUT_SECONDS", 5.0)),
        "MEMORY_BYTES": int(os.environ.get("DM_DIAGRAM_MEMORY_BYTES", 512 * 1024 * 1024)),
        "RETRY_AFTER_SECONDS": float(os.environ.get("DM_DIAGRAM_RETRY_AFTER_SECONDS", 600)),
        "MAX_CONCURRENT": int(os.environ.get("DM_DIAGRAM_MAX_CONCURRENT", 2)),
    },
    # Overload (workflow_site/overload.py): requests one web worker process does at once
    # (0: no limit), how long one waits for a slot before 503, and the Retry-After sent.
    "WEB_OVERLOAD": {
        "MAX_CONCURRENT": int(os.environ.get("DM_WEB_MAX_CONCURRENT", 3)),
        "QUEUE_SECONDS": float(os.environ.get("DM_WEB_QUEUE_SECONDS", 0.01)),
        "RETRY_AFTER_SECONDS": int(os.environ.get("DM_WEB_RETRY_AFTER_SECONDS", 2)),
        "MAX_QUEUED_SECONDS": float(os.environ.get("DM_WEB_MAX_QUEUED_SECONDS", 0.1)),
    },
    # Named IO operations: name -> dotted path of a callable(*args, **kwargs).
    "IO_OPERATIONS": {
        "http.request": "executions.runtime.io.http_request",
        "http.request.json": "executions.runtime.io.http_request_json",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DM_LOG_LEVEL", "WARNING")},
}
