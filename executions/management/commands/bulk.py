import json

from django.core.exceptions import ObjectDoesNotExist
from django.core.management.base import BaseCommand, CommandError

from executions import operations
from executions.management.commands._operations import add_operation_arguments, operation_of


class Command(BaseCommand):
    help = ("Act on many executions. `preview OPERATION --filter status=failed ...` (or --ids) "
            "stores the dry run and prints its id; `run ID --reason R` runs it as a background "
            "job (--here: in this process); `show ID`; `resume ID` starts a stopped job again.")
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        commands = parser.add_subparsers(dest="command", required=True)
        preview = commands.add_parser("preview")
        add_operation_arguments(preview)
        preview.add_argument("--filter", action="append", default=[], metavar="NAME=VALUE",
                             help="a filter of the execution list (repeat)")
        preview.add_argument("--ids", nargs="+", help="these executions")
        run = commands.add_parser("run")
        run.add_argument("id")
        run.add_argument("--reason", required=True)
        run.add_argument("--here", action="store_true", help="run the job in this process")
        for name in ("show", "resume"):
            commands.add_parser(name).add_argument("id")

    def handle(self, *args, command, **options):
        try:
            if command == "preview":
                bulk = operations.preview_bulk(self._selection(options), operation_of(options),
                                               actor="cli")
            elif command == "run":
                bulk = operations.run_bulk(options["id"], actor="cli", reason=options["reason"])
                if options["here"]:
                    operations.bulk_job(str(bulk.pk))
            elif command == "resume":
                bulk = operations.resume_bulk(options["id"])
            else:
                bulk = operations.bulk_operation(options["id"])
        except operations.InvalidRequest as exc:
            raise CommandError(f"{exc} (at {exc.path})" if exc.path else str(exc)) from exc
        except operations.NotAvailable as exc:
            raise CommandError(exc.reason) from exc
        except ObjectDoesNotExist as exc:
            raise CommandError(f"no bulk operation {options['id']}") from exc
        bulk.refresh_from_db()
        progress = operations.bulk_progress(bulk)
        self.stdout.write(f"bulk operation {bulk.pk}: {bulk.kind} of {bulk.total}, {bulk.status}")
        self.stdout.write(f"  dry run  {json.dumps(progress['previewed'])}")
        self.stdout.write(f"  done     {progress['done']} {json.dumps(progress['outcomes'])}")

    def _selection(self, options) -> dict:
        if options["ids"]:
            return {"ids": options["ids"]}
        filters: dict = {}
        for pair in options["filter"]:
            name, sep, value = pair.partition("=")
            if not sep:
                raise CommandError(f"--filter {pair!r}: write NAME=VALUE")
            filters.setdefault(name, []).append(value)
        return {"filters": filters}
