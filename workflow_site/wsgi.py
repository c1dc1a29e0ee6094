import os
import sys

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workflow_site.settings")
application = get_wsgi_application()

# gthread runs a request per thread and one main thread that accepts and dispatches; with
# CPython's default 5 ms switch interval, threads busy with requests keep the main thread
# (and a thread that would answer 503 in 0.1 ms) waiting for the GIL for tens of ms each.
sys.setswitchinterval(float(os.environ.get("DM_WEB_SWITCH_INTERVAL", 0.001)))
