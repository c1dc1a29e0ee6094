"""The machines app's exceptions in the API's one error shape (api.errors registry)."""
from api import errors
from api.errors import count, problem
from machines.language import DefinitionError
from machines.services import VersionConflict


def invalid_definition(exc: DefinitionError):
    found = [p.to_dict() for p in exc.errors]
    return (count(len(found), "problem") + " in the definition.", found,
            {"warnings": [p.to_dict() for p in exc.warnings]})


def version_conflict(exc: VersionConflict):
    return str(exc), [problem("version", f"version {exc.version} already holds a different "
                              "definition", "omit `version` to save the next one")], {}


def register() -> None:
    errors.register(DefinitionError, 400, "invalid_definition", describe=invalid_definition)
    errors.register(VersionConflict, 409, "version_conflict", describe=version_conflict)
