"""What the operators' commands share: the operation's arguments, checked by the service."""
from django.core.management.base import CommandError

from executions import operations
from executions.management.commands._common import json_object


def add_operation_arguments(parser):
    parser.add_argument("operation", choices=operations.KINDS)
    parser.add_argument("--context", help="the whole context, a JSON object (edit, move, retry)")
    parser.add_argument("--input", help="a JSON object: the action's input, or the failed "
                                        "step's to retry")
    parser.add_argument("--state", help="where to move")
    parser.add_argument("--action", help="the action to send")
    parser.add_argument("--to-version", dest="version", type=int,
                        help="the version to migrate to")
    parser.add_argument("--map", action="append", default=[], metavar="OLD=NEW",
                        help="migrate: the state of the new version for an old one (repeat)")


def operation_of(options) -> operations.Request:
    mapping = {}
    for pair in options["map"]:
        old, sep, new = pair.partition("=")
        if not sep:
            raise CommandError(f"--map {pair!r}: write OLD=NEW")
        mapping[old] = new
    try:
        return operations.request(
            options["operation"],
            context=json_object(options["context"], "--context") if options["context"] else None,
            input=json_object(options["input"], "--input") if options["input"] else None,
            state=options["state"], action=options["action"], version=options["version"],
            mapping=mapping or None)
    except operations.InvalidRequest as exc:
        raise CommandError(f"{exc} (at {exc.path})" if exc.path else str(exc)) from exc
