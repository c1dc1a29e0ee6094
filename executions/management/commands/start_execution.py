from django.core.exceptions import ObjectDoesNotExist
from django.core.management.base import BaseCommand, CommandError

from executions import services
from executions.management.commands._common import describe, json_object


class Command(BaseCommand):
    help = "Start an execution of a machine and show where it paused."
    # The system checks load every URL and view (DRF, the schema): seconds of imports a
    # command that reads or drives one execution does not need (`manage.py check` runs them).
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("machine", help="machine id")
        parser.add_argument("--input", default="{}", help="start input as a JSON object")
        parser.add_argument("--machine-version", type=int, dest="version",
                            help="machine version (default: latest)")
        parser.add_argument("--wait", type=float, default=10,
                            help="seconds to wait for the first pause (default 10)")

    def handle(self, *args, machine, input, version, wait, **options):
        try:
            outcome = services.start(machine, input=json_object(input), version=version,
                                   actor="cli", wait=True, timeout=wait)
        except ObjectDoesNotExist as exc:
            which = f" version {version}" if version else ""
            raise CommandError(f"no machine {machine!r}{which}") from exc
        except services.InvalidRequest as exc:
            raise CommandError(str(exc)) from exc
        describe(outcome.execution, self.stdout)
