from django.core.management.base import BaseCommand, CommandError

from executions import operations
from executions.management.commands._common import describe, find_execution, not_available
from executions.management.commands._operations import add_operation_arguments, operation_of


class Command(BaseCommand):
    help = ("Repair one execution: retry (with --context or --input), cancel, edit --context, "
            "move --state, action --action, migrate --to-version. --dry-run says what it would do; "
            "without it --reason is required (history records it).")
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("execution", help="execution id (or a unique prefix)")
        add_operation_arguments(parser)
        parser.add_argument("--reason", help="why (required unless --dry-run)")
        parser.add_argument("--dry-run", action="store_true", help="change nothing")

    def handle(self, *args, execution, dry_run, reason, **options):
        found = find_execution(execution)
        operation = operation_of(options)
        if dry_run:
            verdict = operations.preview(found.pk, operation)
            self.stdout.write(f"{verdict.verdict}: {verdict.reason}")
            for change in verdict.changes:
                self.stdout.write(f"  {change}")
            return
        try:
            outcome = operations.perform(found.pk, operation, actor="cli", reason=reason)
        except operations.NotAvailable as exc:
            raise not_available(exc) from exc
        except operations.InvalidRequest as exc:
            raise CommandError(str(exc)) from exc
        describe(outcome.execution, self.stdout)
