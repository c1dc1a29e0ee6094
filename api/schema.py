"""OpenAPI helpers shared by the apps' API views: the error shape, the common error answers
and the diagram responses (drf-spectacular)."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers


class ProblemSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="Where: `states.cart.actions[2].state`; '' for the "
                                           "whole document or body.")
    message = serializers.CharField()
    hint = serializers.CharField(allow_null=True, required=False)
    line = serializers.IntegerField(required=False, help_text="In expressions and text.")
    column = serializers.IntegerField(required=False)


class ErrorSerializer(serializers.Serializer):
    """The shape of every error answer."""

    type = serializers.CharField(help_text="validation_error, parse_error, invalid_definition, "
                                           "not_authenticated, permission_denied, not_found, "
                                           "version_conflict, not_available, payload_too_large, "
                                           "diagram_too_large, diagram_busy…")
    detail = serializers.CharField(help_text="A human sentence.")
    errors = ProblemSerializer(many=True)
    warnings = ProblemSerializer(many=True, required=False,
                                 help_text="Only for invalid_definition.")
    available_actions = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Only for not_available.")
    reason = serializers.CharField(required=False, help_text="Only for diagram_too_large: "
                                                             "too_large, timeout or failed.")
    description = serializers.CharField(required=False, help_text="Only for diagram_too_large: "
                                        "the diagram as text (states and transitions).")


def error_response(what: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=what)


COMMON_ERRORS = {
    401: error_response("No or invalid credentials."),
    403: error_response("The user's role does not allow this."),
}
BODY_ERRORS = {
    400: error_response("Malformed body or invalid values."),
    413: error_response("Body larger than the limit (256 KiB by default)."),
    415: error_response("Not JSON (or YAML where accepted)."),
}

SVG_EXAMPLE = OpenApiExample(
    "SVG", response_only=True, media_type="image/svg+xml",
    value='<svg width="100%" class="dm-svg" …><g id="state-cart" class="node state">…</g></svg>')
DOT_EXAMPLE = OpenApiExample(
    "DOT", response_only=True, media_type="text/vnd.graphviz",
    value='digraph order {\n  rankdir=LR\n  s0 [label="cart" id="state-cart"]\n  …\n}')
SVG_RESPONSE = {
    (200, "image/svg+xml"): OpenApiResponse(OpenApiTypes.STR, description="The diagram as SVG."),
    422: error_response("diagram_too_large: the machine has more states or transitions than a "
                        "diagram is drawn for, or Graphviz ran out of time or memory drawing "
                        "it; `description` holds the text alternative."),
    503: error_response("diagram_busy: this server already runs as many Graphviz processes "
                        "as it may; try again in a moment."),
}
DOT_RESPONSE = {(200, "text/vnd.graphviz"): OpenApiResponse(
    OpenApiTypes.STR, description="The diagram as Graphviz DOT source.")}
