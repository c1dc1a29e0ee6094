from django.core.management.base import BaseCommand, CommandError

from executions import services
from executions.management.commands._common import (
    add_execution_arguments,
    describe,
    find_execution,
    json_object,
    not_available,
)


class Command(BaseCommand):
    help = "Send an action to an execution and show where it paused next."
    # The system checks load every URL and view (DRF, the schema): seconds of imports a
    # command that reads or drives one execution does not need (`manage.py check` runs them).
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        add_execution_arguments(parser)
        parser.add_argument("action", help="action name")
        parser.add_argument("--input", default="{}", help="action input as a JSON object")
        parser.add_argument("--wait", type=float, default=10,
                            help="seconds to wait for the next pause (default 10)")

    def handle(self, *args, execution, action, input, wait, **options):
        found = find_execution(execution, options.get("machine"))
        try:
            outcome = services.trigger(found.pk, action, input=json_object(input), actor="cli",
                                     wait=True, timeout=wait)
        except services.NotAvailable as exc:
            raise not_available(exc) from exc
        except services.InvalidRequest as exc:
            raise CommandError(str(exc)) from exc
        describe(outcome.execution, self.stdout)
