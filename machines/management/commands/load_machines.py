"""manage.py load_machines PATH...: store machine definitions from files and folders.

Idempotent: an unchanged file is "unchanged", so deploy scripts can run it every time.
Each file is saved in its own transaction; one broken file does not stop the others.
"""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from machines.language import DefinitionError
from machines.services import VersionConflict, check_source, save_version

SUFFIXES = {".yaml", ".yml", ".json"}


def definition_files(paths: list[str]) -> list[Path]:
    """The named files, and every YAML/JSON file under the named folders, in a stable order."""
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise CommandError(f"No such file or folder: {', '.join(missing)}")
    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        else:
            files.append(path)
    return files


class Command(BaseCommand):
    help = "Load machine definitions (YAML/JSON) from files or folders; unchanged ones are skipped."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH", help="a file or a folder")

    def handle(self, *args, paths, **options):
        files = definition_files(paths)
        outcomes = {path: self.load(path) for path in files}
        # Warnings come last, once every file is in: a machine may invoke one loaded after it.
        for path, text in outcomes.items():
            if isinstance(text, str):
                for problem in check_source(text).warnings:
                    self.stdout.write(f"warning: {path}: {describe(problem)}")
        failed = [path for path, outcome in outcomes.items() if outcome is False]
        if failed:
            raise CommandError(f"{len(failed)} of {len(files)} file(s) failed to load.")
        if not files:
            self.stdout.write("No .yaml, .yml or .json files found.")

    def load(self, path: Path) -> str | bool:
        """Save one file and report it: False when it failed, its text when it is new."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as unreadable:
            self.stderr.write(f"{path}: cannot read: {unreadable}")
            return False
        try:
            with transaction.atomic():
                stored, created = save_version(text)
        except DefinitionError as invalid:
            self.stderr.write(f"{path}: not loaded, {len(invalid.errors)} error(s):")
            for problem in invalid.errors:
                self.stderr.write(f"  {describe(problem)}")
            return False
        except VersionConflict as conflict:
            self.stderr.write(f"{path}: {conflict}")
            return False
        verb = "created" if created else "unchanged"
        self.stdout.write(f"{verb} {stored.machine_id} v{stored.version}  ({path})")
        return text if created else True


def describe(problem) -> str:
    """`path: message (hint)`, with the line when the problem has one."""
    where = problem.path or "(document)"
    if problem.line:
        where += f" (line {problem.line})"
    text = f"{where}: {problem.message}"
    return f"{text} ({problem.hint})" if problem.hint else text
