"""OpenAPI examples of the executions API (shown in /api/docs/)."""
from drf_spectacular.utils import OpenApiExample

EXECUTION_EXAMPLE = {
    "id": "5b0d1c52-6a3e-4f57-9d1a-2f7b8c9e0a11", "machine": "order", "version": 3,
    "mode": "sync", "status": "waiting", "state": "cart", "context": {"items": ["sku-1"]},
    "input": {}, "result": None, "error": None, "available_actions": ["add", "place"],
    "parent": None, "children": [], "actor": "token:olga", "idempotency_key": "order-42",
    "created_at": "2026-11-26T10:00:00Z", "updated_at": "2026-11-26T10:00:01Z",
    "finished_at": None, "url": "/executions/5b0d1c52-6a3e-4f57-9d1a-2f7b8c9e0a11/",
    "api_url": "/api/executions/5b0d1c52-6a3e-4f57-9d1a-2f7b8c9e0a11/",
    "history_url": "/api/executions/5b0d1c52-6a3e-4f57-9d1a-2f7b8c9e0a11/history/",
    "diagram_url": "/api/executions/5b0d1c52-6a3e-4f57-9d1a-2f7b8c9e0a11/diagram.svg",
}
EXECUTION_RESPONSE = OpenApiExample("An execution", response_only=True, value=EXECUTION_EXAMPLE)
EXECUTION_IN_PAGE = OpenApiExample("An execution in a page", response_only=True,
                                   value=EXECUTION_EXAMPLE)  # drf-spectacular adds the page
NOT_AVAILABLE_EXAMPLE = OpenApiExample(
    "Action not available", status_codes=[409], response_only=True, value={
        "type": "not_available", "detail": "'ship' is not available in state cart",
        "errors": [{"path": "action", "message": "'ship' is not available in state cart",
                    "hint": "available now: add, place"}],
        "available_actions": ["add", "place"]})
INVALID_FILTER_EXAMPLE = OpenApiExample(
    "Invalid filter", status_codes=[400], response_only=True, value={
        "type": "validation_error", "detail": "\"done\" is not a valid choice. (status)",
        "errors": [{"path": "status", "message": "\"done\" is not a valid choice.",
                    "hint": None}]})
START_EXAMPLE = OpenApiExample("Start", request_only=True, value={
    "input": {"customer": "c-17"}, "idempotency_key": "order-42", "wait": True, "timeout": 10})
TRIGGER_EXAMPLE = OpenApiExample("Add an item", request_only=True, value={
    "action": "add", "input": {"sku": "sku-1"}, "idempotency_key": "add-1", "wait": True})
CANCEL_EXAMPLE = OpenApiExample("Reason", request_only=True, value={"reason": "customer called"})
HISTORY_ROW_EXAMPLE = OpenApiExample("A history row in a page", response_only=True, value={
    "seq": 2, "kind": "transition_taken", "at": "2026-11-26T10:00:01Z",
    "actor": "token:olga", "transition": "add", "branch": None,
    "from_state": "cart", "to_state": "cart", "action": "add",
    "input": {"sku": "sku-1"}, "context": {"items": ["sku-1"]}, "output": None,
    "error": None, "guards": None, "detail": None, "duration_ms": 0.4})
