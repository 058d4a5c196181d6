"""Hypothesis: the JSON depth bound (smsgate/inputs.py) against a reference reader, on valid JSON and
on any prefix of it (the decoder recurses into brackets that are never closed)."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from smsgate.inputs import JSON_MAX_DEPTH, json_loads, json_too_deep

FUZZ = settings(max_examples=400, deadline=None)

# Strings full of what could mislead a counter: brackets, quotes, backslashes, non-ASCII.
tricky_text = st.text(alphabet=st.sampled_from('[]{}"\\ab я\u00e9\U0001f600'), max_size=8)
values = st.recursive(
    st.none() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=60,
)


def nested(value, depth: int, kind: str):
    for _ in range(depth):
        value = [value] if kind == "list" else {"k[\"": value}
    return value


def reference_depth(text: str) -> int:
    """The deepest point a recursive decoder reaches reading `text` up to its first error: brackets
    outside strings, strings with their escapes (a character loop, slow and plain)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


@FUZZ
@given(value=values, extra=st.integers(0, 60), kind=st.sampled_from(["list", "dict"]))
def test_valid_json_is_too_deep_exactly_when_it_nests_past_the_bound(value, extra, kind):
    text = json.dumps(nested(value, extra, kind), ensure_ascii=False)
    depth = reference_depth(text)
    assert json_too_deep(text) == (depth > JSON_MAX_DEPTH)
    if depth <= JSON_MAX_DEPTH:
        assert json_loads(text.encode()) == json.loads(text)


@FUZZ
@given(value=values, extra=st.integers(0, 60), kind=st.sampled_from(["list", "dict"]), cut=st.floats(0, 1))
def test_a_cut_document_is_never_found_shallower_than_the_decoder_would_go(value, extra, kind, cut):
    text = json.dumps(nested(value, extra, kind), ensure_ascii=False)
    prefix = text[: int(len(text) * cut)]
    if reference_depth(prefix) > JSON_MAX_DEPTH:
        assert json_too_deep(prefix)
