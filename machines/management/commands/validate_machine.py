"""`manage.py validate_machine FILE...`: every error and warning of machine definition files.

Meant for authors and CI: it checks what saving would check, without saving anything.
Child machines count as existing when they are stored or among the files given.
"""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from machines import selectors
from machines.language import check, parse_text


class Command(BaseCommand):
    help = "Validate machine definition files (YAML or JSON); exit status 1 when any has errors."

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="+", metavar="FILE")

    def handle(self, *args, files, **options):
        texts = {name: _read(name) for name in files}
        given_ids = _ids(text for text in texts.values() if isinstance(text, str))

        def machine_exists(machine_id: str) -> bool:
            return machine_id in given_ids or selectors.machine_exists(machine_id)

        failed = 0
        for name, text in texts.items():
            if isinstance(text, OSError | UnicodeError):
                failed += 1
                self.stdout.write(self.style.ERROR(f"{name}: error: cannot read it: {text}"))
                continue
            result = check(text, machine_exists=machine_exists)
            failed += not result.valid
            self._report(name, result.errors, result.warnings)
        if failed:
            raise CommandError(f"{failed} of {len(files)} files have errors")

    def _report(self, name: str, errors, warnings) -> None:
        warned = _count(len(warnings), "warning")
        if errors:
            summary = ", ".join(filter(None, [_count(len(errors), "error"), warned]))
        else:
            summary = f"ok ({warned})" if warnings else "ok"
        style = self.style.ERROR if errors else self.style.SUCCESS
        self.stdout.write(style(f"{name}: {summary}"))
        for problem in errors:
            self.stdout.write(f"  error: {problem}")
        for problem in warnings:
            self.stdout.write(self.style.WARNING(f"  warning: {problem}"))


def _read(name: str) -> str | OSError | UnicodeError:
    try:
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        return exc


def _ids(texts) -> set[str]:
    """Ids of the given definitions that parse, so they may invoke one another."""
    ids = set()
    for text in texts:
        try:
            machine_id = parse_text(text)[0].get("id")
        except ValueError:
            continue  # reported with the file's other errors
        if isinstance(machine_id, str):
            ids.add(machine_id)
    return ids


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}" if number else ""
