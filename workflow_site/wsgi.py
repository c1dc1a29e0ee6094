import gc
import os
import sys

from django.core.wsgi import get_wsgi_application

from workflow_site import wal

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workflow_site.settings")
application = get_wsgi_application()

# gthread runs a request per thread and one main thread that accepts and dispatches; with
# CPython's default 5 ms switch interval, threads busy with requests keep the main thread
# (and a thread that would answer 503 in 0.1 ms) waiting for the GIL for tens of ms each.
sys.setswitchinterval(float(os.environ.get("DM_WEB_SWITCH_INTERVAL", 0.001)))

# SQLite: no request's commit copies the write-ahead log back (workflow_site/wal.py).
wal.checkpoint_off_requests()

# What a worker loads once (Django, the apps, the URLs with every view) lives as long as
# the process: loaded now rather than by the first request, and frozen out of the garbage
# collector's passes (a full pass over it took 37 ms inside a request; 6 ms frozen).
from django.urls import get_resolver  # noqa: E402 (after the settings are set up)

get_resolver().url_patterns  # noqa: B018 (imports the URLconf and its views)
gc.collect()
gc.freeze()
