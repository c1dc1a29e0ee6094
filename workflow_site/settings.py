"""Settings for Data Machines, read from the environment (12-factor).

DATABASE_URL   sqlite:///path or postgres://user@host/db (default: SQLite file db.sqlite3, WAL)
REDIS_URL      when set, django-q2 uses the Redis broker; otherwise the ORM broker
DJANGO_SECRET_KEY, DJANGO_DEBUG, DJANGO_ALLOWED_HOSTS
"""
import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name, default=False):
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = (
    os.environ.get("DJANGO_SECRET_KEY") or "insecure-dev-key: set DJANGO_SECRET_KEY in production"
)


def env_list(name, default=""):
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
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
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

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
        "timeout": 20,
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
    # Timer loop poll interval (seconds).
    "TIMER_POLL_SECONDS": float(os.environ.get("DM_TIMER_POLL_SECONDS", 0.05)),
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
