"""Request bodies no client can turn into a 500.

`JSONBodyParser`/`TextBodyParser` refuse what would break something further down: more than
DATA_UPLOAD_MAX_MEMORY_SIZE bytes (413; DRF's own parsers read the stream without that
limit), bytes that are not UTF-8, and every value expressions.values refuses (NaN/Infinity,
1e400, nesting deeper than its MAX_DEPTH, NUL or lone surrogates in text): a 400
`parse_error` naming where in the body.
"""
from __future__ import annotations

from django.conf import settings
from rest_framework.parsers import BaseParser

from api.errors import BodyParseError, PayloadTooLarge
from expressions.values import InvalidValue, check_text, load_json


def read_limited(stream) -> bytes:
    """The body, or PayloadTooLarge as soon as it passes the limit."""
    if stream is None:
        return b""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge()
    return raw


def decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyParseError(
            f"The body is not UTF-8 text (byte {exc.start} is invalid).") from None


def refused(exc: InvalidValue) -> BodyParseError:
    """An InvalidValue in the error shape: `parse_error` with its path."""
    return BodyParseError(str(exc), exc.path, exc.message)


class JSONBodyParser(BaseParser):
    """application/json, within the limits above."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        raw = read_limited(stream)
        if not raw.strip():
            return {}
        try:
            return load_json(decode(raw))
        except InvalidValue as exc:
            raise refused(exc) from None


class TextBodyParser(BaseParser):
    """A definition posted as YAML (or JSON) text: `curl --data-binary @order.yaml`."""

    media_type = "application/yaml"

    def parse(self, stream, media_type=None, parser_context=None):
        text = decode(read_limited(stream))
        try:
            check_text(text)
        except InvalidValue as exc:
            raise refused(exc) from None
        return text


class TextYAMLParser(TextBodyParser):
    media_type = "text/yaml"
