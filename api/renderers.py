"""The API's JSON renderer for answers built without a serializer (the history pages)."""
from rest_framework.renderers import JSONRenderer

from expressions.values import printable


class PrintableJSONRenderer(JSONRenderer):
    """DRF's JSON, with text no JSON answer can encode (a lone surrogate stored before values
    were checked) escaped as expressions.values.printable does. The answer's one encoding
    finds such text: a page is not encoded twice (once to check it, once to send it)."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            return super().render(printable(data), accepted_media_type, renderer_context)
