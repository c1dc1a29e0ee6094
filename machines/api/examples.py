"""OpenAPI examples of the machines API (shown in /api/docs/)."""
from drf_spectacular.utils import OpenApiExample

ORDER_YAML = """id: order
title: Order
execution_mode: sync
start_at: cart
context: {items: []}
states:
  cart:
    actions:
      - {id: add, on: add, assign: {items: "ctx['items'] + [input['sku']]"}}
      - {id: place, on: place, when: "len(ctx['items']) > 0", state: placed}
  placed: {return: "ctx['items']"}
"""

SOURCE_BODY_EXAMPLES = [
    OpenApiExample("YAML text", value={"source": ORDER_YAML}, request_only=True),
    OpenApiExample("Definition object", request_only=True, value={
        "id": "order", "execution_mode": "sync", "start_at": "cart",
        "states": {"cart": {"actions": [{"id": "place", "on": "place", "state": "placed"}]},
                   "placed": {"return": None}}}),
]
VERSION_EXAMPLE = OpenApiExample("A stored version", response_only=True, value={
    "id": "order", "version": 3, "title": "Order", "description": "",
    "definition": {"id": "order", "version": 3, "start_at": "cart", "states": {}},
    "source": ORDER_YAML, "source_format": "yaml", "content_hash": "9f2c…",
    "created_at": "2026-11-26T10:00:00Z", "created_by": "erin",
    "api_url": "/api/machines/order/versions/3/",
    "diagram_url": "/api/machines/order/versions/3/diagram.svg", "url": "/machines/order/3/"})
VERSIONS_EXAMPLE = OpenApiExample("Versions", response_only=True, value=[VERSION_EXAMPLE.value])
INVALID_EXAMPLE = OpenApiExample("Invalid definition", status_codes=[400], response_only=True,
                                 value={
    "type": "invalid_definition", "detail": "1 problem in the definition.",
    "errors": [{"path": "states.cart.actions[1].state", "message": "unknown state 'placd'",
                "hint": "did you mean 'placed'?"}], "warnings": []})
MACHINES_EXAMPLE = OpenApiExample("Machines", response_only=True, value=[{
    "id": "order", "version": 3, "title": "Order", "description": "", "versions": 3,
    "executions": {"waiting": 4, "finished": 17}, "api_url": "/api/machines/order/",
    "url": "/machines/order/"}])
VALIDATION_EXAMPLE = OpenApiExample("Result", response_only=True, value={
    "valid": False,
    "errors": [{"path": "start_at", "message": "unknown state 'crt'",
                "hint": "did you mean 'cart'?"}],
    "warnings": []})
