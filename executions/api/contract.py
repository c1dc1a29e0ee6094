"""A machine's own OpenAPI document: the start and each action with the input schemas the
machine declares (machines/contracts.py), so a client generator gets typed calls.

The general schema (/api/schema/) describes `input` as any object; this one, built from
the latest version, says what this machine takes.
"""
from __future__ import annotations

from machines.definition import Machine

ANY_OBJECT = {"type": "object", "description": "Not described by the machine: any object."}


def openapi_document(machine: Machine, version: int) -> dict:
    """OpenAPI 3.1 (its schemas are JSON Schema 2020-12, the dialect of `input:`)."""
    machine_id = machine.id
    error = {"$ref": "#/components/schemas/Error"}
    execution = {"$ref": "#/components/schemas/Execution"}
    actions = sorted({name for state in machine.states.values()
                      for name in state.action_names})
    action_bodies = [_action_body(name, machine.action_inputs.get(name)) for name in actions]
    trigger = {
        "summary": "Trigger one of the machine's actions",
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"oneOf": action_bodies} if action_bodies else {"type": "object"}}}},
        "responses": _responses(execution, error, {"200": "Applied (with `wait`).",
                                                   "202": "Accepted.",
                                                   "409": "Not available now, or rejected "
                                                          "by its transition."}),
    }
    by_id = "/api/executions/{execution_id}"
    paths: dict = {
        f"/api/machines/{machine_id}/executions/": {"post": {
            "summary": f"Start an execution of {machine.display}",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "input": machine.input_schema or ANY_OBJECT,
                    "idempotency_key": {"type": "string", "maxLength": 200},
                    "wait": {"type": "boolean", "default": False},
                    "timeout": {"type": "number", "exclusiveMinimum": 0},
                    "version": {"type": "integer", "minimum": 1}}}}}},
            "responses": _responses(execution, error, {
                "201": "Started.",
                "200": "The execution started earlier with this idempotency key"
                       + (" or business key." if machine.key
                          and not machine.key.in_context else ".")}),
        }},
        by_id + "/actions/": {"post": {**trigger, "parameters": [_id_parameter()]}},
    }
    if machine.key is not None:
        key_path = f"/api/machines/{machine_id}/keys/{{key}}"
        read_from = "context" if machine.key.in_context else "start input"
        key_parameter = {"name": "key", "in": "path", "required": True,
                         "schema": {"type": "string", "maxLength": 200},
                         "description": f"The business key, {machine.key.source} of the "
                                        f"{read_from} (unique: {machine.key.unique})."}
        paths[key_path + "/"] = {"get": {
            "summary": "The execution with this key (the unfinished one, else the newest)",
            "parameters": [key_parameter],
            "responses": _responses(execution, error, {"200": "The execution."})}}
        paths[key_path + "/actions/"] = {"post": {**trigger, "parameters": [key_parameter]}}
        paths[key_path + "/cancel/"] = {"post": {
            "summary": "Cancel the execution with this key", "parameters": [key_parameter],
            "responses": _responses(execution, error, {"200": "Canceled."})}}
    if machine.attributes:
        paths["/api/executions/"] = {"get": {
            "summary": f"List executions of {machine.display}, filtered by attribute",
            "parameters": [{"name": "machine", "in": "query", "required": True,
                            "schema": {"const": machine_id}}]
            + [parameter for attribute in machine.attributes
               for parameter in _attribute_parameters(attribute.name, attribute.type)],
            "responses": {"200": {"description": "A page of executions."},
                          "400": {"description": "An unknown parameter or a bad value.",
                                  "content": {"application/json": {"schema": error}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{machine.display} (machine {machine_id}, version {version})",
                 "version": str(version),
                 "description": machine.description or ""},
        "paths": paths,
        "components": {"schemas": {
            "Execution": {"type": "object", "description": "As GET /api/executions/{id}/ "
                          "answers (see /api/schema/)."},
            "Error": {"type": "object", "required": ["type", "detail", "errors"],
                      "properties": {"type": {"type": "string"}, "detail": {"type": "string"},
                                     "errors": {"type": "array", "items": {
                                         "type": "object", "properties": {
                                             "path": {"type": "string"},
                                             "message": {"type": "string"},
                                             "hint": {"type": ["string", "null"]}}}}}},
        }},
    }


def _action_body(name: str, schema: dict | None) -> dict:
    return {"type": "object", "title": name, "required": ["action"],
            "additionalProperties": False,
            "properties": {"action": {"const": name}, "input": schema or ANY_OBJECT,
                           "wait": {"type": "boolean"}, "timeout": {"type": "number"},
                           "idempotency_key": {"type": "string", "maxLength": 200}}}


def _id_parameter() -> dict:
    return {"name": "execution_id", "in": "path", "required": True,
            "schema": {"type": "string"},
            "description": "The execution's id, or a unique prefix of it (its short id)."}


COMPARED = {"number": {"type": "number"}, "timestamp": {"type": "string",
                                                         "format": "date-time"}}


def _attribute_parameters(name: str, kind: str) -> list[dict]:
    schema = COMPARED.get(kind) or ({"type": "boolean"} if kind == "boolean"
                                    else {"type": "string", "maxLength": 200})
    lookups = ["", "__gt", "__gte", "__lt", "__lte"] if kind != "boolean" else [""]
    return [{"name": f"attr.{name}{lookup}", "in": "query", "required": False,
             "schema": schema} for lookup in lookups]


def _responses(execution: dict, error: dict, ok: dict) -> dict:
    answers = {code: {"description": text, "content": {"application/json": {
        "schema": execution if code < "300" else error}}} for code, text in ok.items()}
    answers["400"] = {"description": "The input does not match the schema; `errors` has "
                                     "the path of each mismatch.",
                      "content": {"application/json": {"schema": error}}}
    answers["404"] = {"description": "No such machine or execution.",
                      "content": {"application/json": {"schema": error}}}
    return answers
