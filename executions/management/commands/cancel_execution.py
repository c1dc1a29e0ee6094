from django.core.management.base import BaseCommand, CommandError

from executions import services
from executions.management.commands._common import (
    add_execution_arguments,
    describe,
    find_execution,
    not_available,
)


class Command(BaseCommand):
    help = "Cancel an execution (by id, short id, or --machine and its business key)."
    # The system checks load every URL and view (DRF, the schema): seconds of imports a
    # command that reads or drives one execution does not need (`manage.py check` runs them).
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        add_execution_arguments(parser)
        parser.add_argument("--reason", required=True, help="why (required, kept in history)")

    def handle(self, *args, execution, reason, **options):
        found = find_execution(execution, options.get("machine"))
        try:
            outcome = services.cancel(found.pk, actor="cli", reason=reason)
        except services.NotAvailable as exc:
            raise not_available(exc) from exc
        except services.InvalidRequest as exc:
            raise CommandError(str(exc)) from exc
        describe(outcome.execution, self.stdout)
