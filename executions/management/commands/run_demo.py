"""Drive the example machines through a realistic story, so the explorer has something to show.

It stands up small stand-ins for the outside services the examples call (a courier, HR,
IT, payments) on 127.0.0.1, and runs queued work in this process (django-q2's sync mode), so
it needs no worker. Some executions are left waiting on purpose: open them in the explorer.
"""
import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

from django.core.management.base import BaseCommand, CommandError
from django_q.conf import Conf

from executions import selectors, services
from machines import selectors as machine_selectors

SERVICES_PORT = 8765
_numbers = itertools.count(1001)


class DemoServices(BaseHTTPRequestHandler):
    """Answers every POST with 200 and the fields the examples read."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        number = next(_numbers)
        body = json.dumps({
            "id": f"E-{number}", "n": 1, "paid": True, "receipt": f"RC-{number}",
            "login": f"user{number}",
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Command(BaseCommand):
    help = "Drive the example machines through a realistic story (no worker needed)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=SERVICES_PORT,
                            help=f"port of the stand-in services (default {SERVICES_PORT})")

    def handle(self, *args, port, **options):
        needed = {"order", "shipment", "document-approval", "employee-onboarding",
                  "subscription-billing", "support-ticket"}
        missing = needed - set(machine_selectors.machine_ids())
        if missing:
            raise CommandError(f"load the examples first (missing: {', '.join(sorted(missing))}):"
                               " manage.py load_machines examples")
        try:
            server = ThreadingHTTPServer(("127.0.0.1", port), DemoServices)
        except OSError as exc:
            raise CommandError(f"cannot listen on 127.0.0.1:{port} ({exc}); use --port") from exc
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}"
        try:
            with mock.patch.object(Conf, "SYNC", True):
                self.story(base)
        finally:
            server.shutdown()

    def story(self, base):
        shipped = self.start("order", {"courier_url": f"{base}/courier"}, "alice")
        for action, data in (("add", {"sku": "bns12", "qty": 2}), ("add", {"sku": "x9"}),
                             ("remove", {"sku": "bns12"}), ("place", {}),
                             ("fraud-approve", {})):
            self.act(shipped, action, data, "alice" if action != "fraud-approve" else "bob")

        rejected = self.start("order", {"courier_url": f"{base}/courier"}, "carol")
        for action in ("add", "place", "fraud-reject", "cancel"):
            self.act(rejected, action, {"sku": "k2"} if action == "add" else {}, "carol")

        waiting = self.start("order", {"courier_url": f"{base}/courier"}, "dave")
        self.act(waiting, "add", {"sku": "bns12", "qty": 3}, "dave")
        self.act(waiting, "place", {}, "dave")

        document = self.start("document-approval", {}, "erin")
        self.act(document, "submit", {"document": "Q3 budget.pdf", "approver": "frank"}, "erin")

        self.start("employee-onboarding",
                   {"employee": {"name": "Grace Hopper", "team": "compilers"},
                    "services_url": base}, "hr-bot")
        self.start("subscription-billing",
                   {"customer": "acme", "plan": "pro", "payments_url": f"{base}/payments"},
                   "billing-bot")

        ticket = self.start("support-ticket",
                            {"customer": "acme", "subject": "Checkout is down",
                             "body": "Customers cannot pay since 10:00, urgent"}, "support")
        for action, data in (("reassign", {"agent": "heidi"}),
                             ("resolve", {"resolution": "restarted the payment gateway"})):
            self.act(ticket, action, data, "heidi")

    def start(self, machine, data, who):
        outcome = services.start(machine, input=data, actor=f"user:{who}", wait=True)
        self.report(outcome.execution, f"{who} started {machine}")
        return outcome.execution

    def act(self, execution, action, data, who):
        try:
            outcome = services.trigger(execution.pk, action, input=data, actor=f"user:{who}",
                                     wait=True)
        except services.NotAvailable as exc:
            self.stdout.write(f"   {who}: {action} not available ({exc.reason})")
            return
        self.report(outcome.execution, f"{who} chose {action}")

    def report(self, execution, what):
        execution = selectors.execution(execution.pk)  # as stored now
        self.stdout.write(f"{execution.short_id}  {what:<42} -> {execution.status} in "
                          f"{execution.state}")
