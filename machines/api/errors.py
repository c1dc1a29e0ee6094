"""The machines app's exceptions in the API's one error shape (api.registry)."""
from api import registry as errors
from api.registry import count, problem
from machines.diagrams import DiagramBusy, DiagramUnavailable
from machines.language import DefinitionError
from machines.services import VersionConflict


def invalid_definition(exc: DefinitionError):
    found = [p.to_dict() for p in exc.errors]
    return (count(len(found), "problem") + " in the definition.", found,
            {"warnings": [p.to_dict() for p in exc.warnings]})


def version_conflict(exc: VersionConflict):
    return str(exc), [problem("version", f"version {exc.version} already holds a different "
                              "definition", "omit `version` to save the next one")], {}


def diagram_unavailable(exc: DiagramUnavailable):
    """422 diagram_too_large: what stopped it (`reason`: too_large, timeout, failed) and the
    text description the views attach, so a client still has something to show."""
    hint = "the text description is in `description`; the DOT source is at the .dot endpoint"
    return (f"{exc.title}: {exc.detail}", [problem("", exc.detail, hint)],
            {"reason": exc.reason, "description": getattr(exc, "description", None)})


def register() -> None:
    errors.register(DefinitionError, 400, "invalid_definition", describe=invalid_definition)
    errors.register(VersionConflict, 409, "version_conflict", describe=version_conflict)
    errors.register(DiagramUnavailable, 422, "diagram_too_large", describe=diagram_unavailable)
    errors.register(DiagramBusy, 503, "diagram_busy", describe=diagram_unavailable)
