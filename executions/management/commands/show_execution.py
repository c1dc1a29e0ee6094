import json

from django.core.management.base import BaseCommand

from executions import selectors
from executions.management.commands._common import (
    add_execution_arguments,
    describe,
    find_execution,
)


class Command(BaseCommand):
    help = "Show an execution: status, state, available actions and its history as a table."
    # The system checks load every URL and view (DRF, the schema): seconds of imports a
    # command that reads or drives one execution does not need (`manage.py check` runs them).
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        add_execution_arguments(parser)

    def handle(self, *args, execution, **options):
        found = find_execution(execution, options.get("machine"))
        describe(found, self.stdout)
        self.stdout.write("")
        self.stdout.write(f"{'seq':>4}  {'at':<12}  {'kind':<22}  {'actor':<14}  what")
        for row in selectors.history(found.pk).order_by("seq"):
            self.stdout.write(
                f"{row.seq:>4}  {row.at:%H:%M:%S.%f}"[:-3] + "  "
                f"{row.kind:<22}  {(row.actor or '-')[:14]:<14}  {_what(row)}"
            )


def _what(row):
    parts = []
    if row.action:
        parts.append(f"action {row.action}")
    if row.transition:
        parts.append(f"{row.transition}: {row.from_state} -> {row.to_state}")
    if row.output is not None:
        parts.append(f"output {json.dumps(row.output)[:60]}")
    if row.error:
        parts.append(f"error {row.error.get('message', '')[:80]}")
    if row.detail and row.detail.get("reason"):
        parts.append(row.detail["reason"][:80])
    return "; ".join(parts)
