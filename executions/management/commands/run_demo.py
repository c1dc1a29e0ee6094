"""Drive the example machines through a realistic story, so the explorer has something to show.

The outside services the examples call (a courier, HR, IT, payments) are mocks stored with
each execution (`mocks`, inherited by children): the demo's executions answer the same way
later, when someone clicks "Fraud approve" on the waiting order in the explorer, with no
stand-in server to keep running. Queued work runs in this process (django-q2's sync mode),
so the story needs no worker; what is left waiting is advanced later by `bin/serve`'s.
"""
from unittest import mock

from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse
from django_q.conf import Conf

from executions import selectors, services
from machines import selectors as machine_selectors

# What every stand-in service answers: status 200 and the fields the examples read. A
# literal (not an expression), the same for every call.
ANSWER = {"id": "E-1001", "n": 1, "paid": True, "receipt": "RC-1001", "login": "demo-user"}
MOCKS = {
    "http.request.json": {"status": 200, "body": ANSWER},
    "http.request": {"status": 200, "body": ""},
}
SERVICES = "https://services.example.invalid"  # never called: the mocks answer


class Command(BaseCommand):
    help = "Drive the example machines through a realistic story (no worker needed)."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000",
                            help="where the explorer runs, for the links printed at the end "
                                 "(default http://127.0.0.1:8000, bin/serve's)")

    def handle(self, *args, url, **options):
        needed = {"order", "shipment", "document-approval", "employee-onboarding",
                  "subscription-billing", "support-ticket"}
        missing = needed - set(machine_selectors.machine_ids())
        if missing:
            raise CommandError(f"load the examples first (missing: {', '.join(sorted(missing))}):"
                               " manage.py load_machines examples")
        with mock.patch.object(Conf, "SYNC", True):
            waiting, ticket = self.story(SERVICES)
        base = url.rstrip("/")
        self.stdout.write("")
        self.stdout.write("Look at:")
        self.stdout.write(f"  {base}{reverse('explorer:execution', args=[waiting.pk])}"
                          "  an order waiting for a fraud check: approve or reject it")
        self.stdout.write(f"  {base}{reverse('explorer:execution', args=[ticket.pk])}"
                          "  a support ticket's whole story")
        self.stdout.write(f"  {base}{reverse('explorer:executions')}  every execution")
        self.stdout.write("Actions clicked there are carried out by bin/serve's workers.")

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
        return waiting, ticket

    def start(self, machine, data, who):
        outcome = services.start(machine, input=data, actor=f"user:{who}", wait=True,
                                 mocks=MOCKS)
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
