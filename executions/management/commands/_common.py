"""Helpers shared by the execution commands: JSON arguments and a plain-text view."""
import json

from django.core.exceptions import ObjectDoesNotExist
from django.core.management.base import CommandError

from executions import selectors, services
from expressions.values import InvalidValue, load_json


def json_object(text, what="--input"):
    try:
        value = load_json(text)
    except InvalidValue as exc:
        raise CommandError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CommandError(f"{what} must be a JSON object, like '{{\"sku\": \"x9\"}}'")
    return value


def add_execution_arguments(parser):
    """`execution`, and `--machine` to read it as that machine's business key instead."""
    parser.add_argument("execution", help="execution id (or a unique prefix); with "
                                          "--machine, the execution's business key")
    parser.add_argument("--machine", help="the machine whose business key `execution` is")


def find_execution(prefix, machine=None):
    """An execution by full id or unique prefix of its id (as shown by show_execution), or
    by its machine's business key."""
    if machine is not None:
        try:
            return selectors.execution(selectors.execution_id_by_key(machine, prefix))
        except ObjectDoesNotExist:
            raise CommandError(f"no execution of {machine!r} with the key {prefix!r}") from None
    found = selectors.executions_by_short_id(prefix)
    if not found:
        raise CommandError(f"no execution {prefix!r}")
    if len(found) > 1:
        raise CommandError(f"{prefix!r} matches several executions; give more of the id")
    return found[0]


def describe(execution, stdout):
    execution = selectors.execution(execution.pk)  # as stored now
    actions = ", ".join(execution.available_actions()) or "none"
    stdout.write(f"execution {execution.id}")
    stdout.write(f"  machine  {execution.machine_id} v{execution.machine_version.version}")
    stdout.write(f"  status   {execution.status}")
    stdout.write(f"  state    {execution.state}")
    stdout.write(f"  actions  {actions}")
    stdout.write(f"  context  {json.dumps(execution.context)}")
    if execution.result is not None or execution.status == "finished":
        stdout.write(f"  result   {json.dumps(execution.result)}")
    if execution.error:
        stdout.write(f"  error    {execution.error.get('message', execution.error)}")


def not_available(exc: services.NotAvailable):
    available = ", ".join(exc.available_actions) or "none"
    return CommandError(f"{exc.reason} (available now: {available})")
