"""Validation of OpenAI Chat Completions and Embeddings requests, by hand, over the client's own dict.

Validation runs on every request, so it is written for the common case: each check is a ``type(x) is str``
style test that passes, and error messages (and the ``messages[2].content`` paths they name) are built only
when a check fails. A failing fast check falls through to a slower one that also accepts subclasses
(``StrEnum`` roles from SDK users), so speed never changes what is accepted.

The body is never copied or cleaned: fields slipstream does not know are kept and reach OpenAI-compatible
upstreams untouched. The rules follow what the OpenAI API accepts; a ``null`` optional field counts as absent.
Two deliberate leniencies, because the OpenAI-compatible providers behind the gateway differ from OpenAI:
any known content part may appear in any role's message (Anthropic takes images in tool results), and an
``input_audio`` part's ``format`` may be any string.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NoReturn

import orjson

from .errors import InvalidRequest
from .types import ChatRequest, EmbeddingsRequest

__all__ = [
    "MAX_EMBEDDING_INPUTS",
    "MAX_MESSAGES",
    "MAX_STOP_SEQUENCES",
    "MAX_TOOLS",
    "PART_TYPES",
    "ROLES",
    "parse_chat_request",
    "parse_embeddings_request",
    "parse_json_body",
    "validate_chat_request",
    "validate_embeddings_request",
]

# ---------------------------------------------------------------------------------------------------- limits
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")
MAX_MESSAGES = 10_000  # abuse limit, not OpenAI's; configurable per call
MAX_TOOLS = 128
MAX_STOP_SEQUENCES = 4
MAX_N = 128
MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 100
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_EMBEDDING_INPUTS = 2048
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_ROLE_SET = frozenset(ROLES)
# Roles whose ``{"role", "content": str}`` message needs no further checks: the inlined fast path.
_PLAIN_ROLES = frozenset({"system", "developer", "user", "assistant"})
_IMAGE_DETAILS = ("auto", "low", "high", "original")
_TOOL_TYPES = ("function", "custom")
_TOOL_CHOICE_MODES = ("none", "auto", "required")
_TOOL_CHOICE_TYPES = ("function", "custom", "allowed_tools")
_ALLOWED_TOOLS_MODES = ("auto", "required")
_FUNCTION_CALL_MODES = ("none", "auto")
_RESPONSE_FORMATS = ("text", "json_object", "json_schema")
_ENCODING_FORMATS = ("float", "base64")
# Function, custom tool and json_schema names (OpenAI's rule).
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")

_JSON_TYPES: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "number",
    float: "number",
    type(None): "null",
}


# ---------------------------------------------------------------------------------------------- entry points
def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The body as a dict; bad UTF-8, bad JSON or a value that is not an object is an ``InvalidRequest``."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if "not valid UTF-8" in reason:
            raise InvalidRequest(f"request body is not valid UTF-8: {reason}") from exc
        raise InvalidRequest(f"request body is not valid JSON: {reason}") from exc
    if type(body) is not dict:
        raise InvalidRequest("request body must be a JSON object")
    return body


def parse_chat_request(raw: bytes, *, max_messages: int = MAX_MESSAGES) -> ChatRequest:
    return validate_chat_request(parse_json_body(raw), max_messages=max_messages)


def parse_embeddings_request(raw: bytes) -> EmbeddingsRequest:
    return validate_embeddings_request(parse_json_body(raw))


def validate_chat_request(body: dict[str, Any], *, max_messages: int = MAX_MESSAGES) -> ChatRequest:
    """Check a Chat Completions body against OpenAI's rules; the body itself is kept as it is."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    model = body.get("model")
    if type(model) is not str or not model:
        _check_model(body)
    messages = body.get("messages")
    if type(messages) is not list and not isinstance(messages, list):
        _fail_required_or_type(body, "messages", "messages", "an array of messages", messages)
    if not messages:
        _fail("messages", "messages must contain at least one message")
    if len(messages) > max_messages:
        _fail("messages", f"too many messages: {len(messages)}, the limit is {max_messages}")
    for i, m in enumerate(messages):
        # Inlined fast path for the most common message, {"role": "user", "content": "..."}.
        if type(m) is not dict or len(m) != 2 or type(m.get("content")) is not str:
            _check_message(m, i)
        else:
            role = m.get("role")
            if type(role) is not str or role not in _PLAIN_ROLES:
                _check_message(m, i)
    for name, value in body.items():
        check = _CHAT_PARAMS.get(name)
        if check is not None and value is not None:
            check(name, value)
    # OpenAI refuses stream options on a request that does not stream; so do we.
    if body.get("stream_options") is not None and body.get("stream") is not True:
        _fail("stream_options", "stream_options is only allowed when stream is true")
    return ChatRequest(body)


def validate_embeddings_request(body: dict[str, Any]) -> EmbeddingsRequest:
    """Check an Embeddings body: ``input`` is a string, strings, a token array or token arrays, none empty."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    _check_model(body)
    _check_embedding_input(body)
    for name, value in body.items():
        check = _EMBEDDING_PARAMS.get(name)
        if check is not None and value is not None:
            check(name, value)
    return EmbeddingsRequest(body)


# -------------------------------------------------------------------------------------------------- failures
def _fail(param: str, problem: str) -> NoReturn:
    raise InvalidRequest(f"{param}: {problem}", param=param)


def _json_type(value: Any) -> str:
    for cls in type(value).__mro__:
        name = _JSON_TYPES.get(cls)
        if name is not None:
            return name
    return type(value).__name__


def _fail_type(param: str, expected: str, value: Any) -> NoReturn:
    _fail(param, f"expected {expected}, got {_json_type(value)}")


def _fail_required_or_type(obj: dict[str, Any], key: str, param: str, expected: str, value: Any) -> NoReturn:
    if key not in obj:
        _fail(param, f"missing required field '{key}'")
    _fail_type(param, expected, value)


def _fail_choice(param: str, what: str, value: Any, choices: tuple[str, ...]) -> NoReturn:
    shown = repr(value) if isinstance(value, str) else _json_type(value)
    _fail(param, f"unknown {what} {shown}; expected one of {', '.join(choices)}")


# ---------------------------------------------------------------------------------------------- small checks
# Each returns quietly or raises naming the path it was given. Paths are f-strings built per message or part
# only off the fast paths (the inlined checks in ``validate_chat_request`` and ``_check_parts``).
def _is_str(value: Any) -> bool:
    return type(value) is str or isinstance(value, str)


def _is_int(value: Any) -> bool:
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def _is_number(value: Any) -> bool:
    """A JSON number, not a boolean. NaN passes here and fails every range check (``lo <= nan`` is false)."""
    t = type(value)
    return t is float or t is int or (isinstance(value, int | float) and not isinstance(value, bool))


def _require_str(obj: dict[str, Any], key: str, param: str) -> str:
    value = obj.get(key)
    if type(value) is not str and not isinstance(value, str):
        _fail_required_or_type(obj, key, param, "a string", value)
    return value


def _optional_str(obj: dict[str, Any], key: str, param: str) -> None:
    value = obj.get(key)
    if value is not None and not _is_str(value):
        _fail_type(param, "a string", value)


def _optional_bool(obj: dict[str, Any], key: str, param: str) -> None:
    value = obj.get(key)
    if value is not None and type(value) is not bool:
        _fail_type(param, "a boolean", value)


def _optional_object(obj: dict[str, Any], key: str, param: str) -> None:
    value = obj.get(key)
    if value is not None and not isinstance(value, dict):
        _fail_type(param, "an object", value)


def _require_object(obj: dict[str, Any], key: str, param: str) -> dict[str, Any]:
    value = obj.get(key)
    if type(value) is not dict and not isinstance(value, dict):
        _fail_required_or_type(obj, key, param, "an object", value)
    return value


def _require_name(obj: dict[str, Any], key: str, param: str) -> None:
    name = _require_str(obj, key, param)
    if _NAME.fullmatch(name) is None:
        _fail(param, f"invalid name {name!r}: use 1 to 64 letters, digits, underscores or dashes")


def _check_model(body: dict[str, Any]) -> None:
    model = body.get("model")
    if type(model) is not str and not isinstance(model, str):
        _fail_required_or_type(body, "model", "model", "a string", model)
    if not model:
        _fail("model", "model must not be empty")


# -------------------------------------------------------------------------------------------------- messages
def _check_message(m: Any, i: int) -> None:
    if not isinstance(m, dict):
        _fail_type(f"messages[{i}]", "a message object", m)
    role = m.get("role")
    if type(role) is not str and not isinstance(role, str):
        _fail_required_or_type(m, "role", f"messages[{i}].role", "a string", role)
    if role not in _ROLE_SET:
        _fail_choice(f"messages[{i}].role", "role", role, ROLES)
    name = m.get("name")
    if name is not None and not _is_str(name):
        _fail_type(f"messages[{i}].name", "a string", name)
    may_omit_content = False
    if role == "assistant":
        may_omit_content = _check_assistant_fields(m, i)
    elif role == "tool":
        _require_str(m, "tool_call_id", f"messages[{i}].tool_call_id")
    elif role == "function":
        _require_str(m, "name", f"messages[{i}].name")
        may_omit_content = True  # OpenAI's function message has ``content: string | null``
    content = m.get("content")
    if type(content) is str or isinstance(content, str):
        return
    if isinstance(content, list):
        _check_parts(content, i)
    elif content is None:
        if not may_omit_content:
            _fail_missing_content(m, i, role)
    else:
        _fail_type(f"messages[{i}].content", "a string or an array of content parts", content)


def _fail_missing_content(m: dict[str, Any], i: int, role: str) -> NoReturn:
    param = f"messages[{i}].content"
    if role == "assistant":
        _fail(
            param, "an assistant message needs content unless it has tool_calls, function_call or a refusal"
        )
    if "content" not in m:
        _fail(param, f"missing required field 'content' (a {role} message needs content)")
    _fail(param, f"a {role} message needs content, got null")


def _check_assistant_fields(m: dict[str, Any], i: int) -> bool:
    """Check tool_calls, function_call and refusal; true when one of them lets the content be null."""
    may_omit = False
    tool_calls = m.get("tool_calls")
    if tool_calls is not None:
        _check_tool_calls(tool_calls, i)
        may_omit = True
    function_call = m.get("function_call")
    if function_call is not None:
        param = f"messages[{i}].function_call"
        if not isinstance(function_call, dict):
            _fail_type(param, "an object", function_call)
        _require_str(function_call, "name", f"{param}.name")
        _require_str(function_call, "arguments", f"{param}.arguments")
        may_omit = True
    refusal = m.get("refusal")
    if refusal is not None:
        if not _is_str(refusal):
            _fail_type(f"messages[{i}].refusal", "a string", refusal)
        may_omit = True
    return may_omit


def _check_tool_calls(tool_calls: Any, i: int) -> None:
    if not isinstance(tool_calls, list):
        _fail_type(f"messages[{i}].tool_calls", "an array of tool calls", tool_calls)
    if not tool_calls:
        _fail(f"messages[{i}].tool_calls", "must not be an empty array (omit it instead)")
    for j, call in enumerate(tool_calls):
        param = f"messages[{i}].tool_calls[{j}]"
        if not isinstance(call, dict):
            _fail_type(param, "a tool call object", call)
        _require_str(call, "id", f"{param}.id")
        kind = _require_str(call, "type", f"{param}.type")
        if kind == "function":
            fn = _require_object(call, "function", f"{param}.function")
            _require_str(fn, "name", f"{param}.function.name")
            _require_str(fn, "arguments", f"{param}.function.arguments")
        elif kind == "custom":
            custom = _require_object(call, "custom", f"{param}.custom")
            _require_str(custom, "name", f"{param}.custom.name")
            _require_str(custom, "input", f"{param}.custom.input")
        else:
            _fail_choice(f"{param}.type", "tool call type", kind, _TOOL_TYPES)


def _check_parts(parts: list[Any], i: int) -> None:
    if not parts:
        _fail(f"messages[{i}].content", "an array of content parts must not be empty")
    for j, part in enumerate(parts):
        # Fast path: a text part.
        if type(part) is not dict or part.get("type") != "text" or type(part.get("text")) is not str:
            _check_part(part, i, j)


def _check_part(part: Any, i: int, j: int) -> None:
    param = f"messages[{i}].content[{j}]"
    if not isinstance(part, dict):
        _fail_type(param, "a content part object", part)
    kind = _require_str(part, "type", f"{param}.type")
    if kind == "text":
        _require_str(part, "text", f"{param}.text")
    elif kind == "image_url":
        image = _require_object(part, "image_url", f"{param}.image_url")
        if not _require_str(image, "url", f"{param}.image_url.url"):
            _fail(f"{param}.image_url.url", "must not be empty")
        detail = image.get("detail")
        if detail is not None and detail not in _IMAGE_DETAILS:
            _fail_choice(f"{param}.image_url.detail", "detail", detail, _IMAGE_DETAILS)
    elif kind == "input_audio":
        audio = _require_object(part, "input_audio", f"{param}.input_audio")
        _require_str(audio, "data", f"{param}.input_audio.data")
        _require_str(audio, "format", f"{param}.input_audio.format")
    elif kind == "file":
        file = _require_object(part, "file", f"{param}.file")
        for key in ("file_data", "file_id", "filename"):
            _optional_str(file, key, f"{param}.file.{key}")
    elif kind == "refusal":
        _require_str(part, "refusal", f"{param}.refusal")
    else:
        _fail_choice(f"{param}.type", "content part type", kind, PART_TYPES)


# ----------------------------------------------------------------------------------------------------- tools
def _check_tools(name: str, tools: Any) -> None:
    if not isinstance(tools, list):
        _fail_type(name, "an array of tools", tools)
    if not tools:
        _fail(name, "must not be an empty array (omit it instead)")
    if len(tools) > MAX_TOOLS:
        _fail(name, f"too many tools: {len(tools)}, the limit is {MAX_TOOLS}")
    for j, tool in enumerate(tools):
        param = f"{name}[{j}]"
        if not isinstance(tool, dict):
            _fail_type(param, "a tool object", tool)
        kind = _require_str(tool, "type", f"{param}.type")
        if kind == "function":
            _check_function_def(_require_object(tool, "function", f"{param}.function"), f"{param}.function")
        elif kind == "custom":
            custom = _require_object(tool, "custom", f"{param}.custom")
            _require_name(custom, "name", f"{param}.custom.name")
            _optional_str(custom, "description", f"{param}.custom.description")
            _optional_object(custom, "format", f"{param}.custom.format")
        else:
            _fail_choice(f"{param}.type", "tool type", kind, _TOOL_TYPES)


def _check_function_def(fn: dict[str, Any], param: str) -> None:
    _require_name(fn, "name", f"{param}.name")
    _optional_str(fn, "description", f"{param}.description")
    _optional_object(fn, "parameters", f"{param}.parameters")
    _optional_bool(fn, "strict", f"{param}.strict")


def _check_functions(name: str, functions: Any) -> None:
    """The deprecated ``functions`` list: bare function definitions."""
    if not isinstance(functions, list):
        _fail_type(name, "an array of functions", functions)
    if not functions:
        _fail(name, "must not be an empty array (omit it instead)")
    if len(functions) > MAX_TOOLS:
        _fail(name, f"too many functions: {len(functions)}, the limit is {MAX_TOOLS}")
    for j, fn in enumerate(functions):
        if not isinstance(fn, dict):
            _fail_type(f"{name}[{j}]", "a function object", fn)
        _check_function_def(fn, f"{name}[{j}]")


def _check_tool_choice(name: str, choice: Any) -> None:
    if _is_str(choice):
        if choice not in _TOOL_CHOICE_MODES:
            _fail_choice(name, "tool_choice", choice, _TOOL_CHOICE_MODES)
        return
    if not isinstance(choice, dict):
        _fail_type(name, "a string or an object", choice)
    kind = _require_str(choice, "type", f"{name}.type")
    if kind == "function":
        _require_str(_require_object(choice, "function", f"{name}.function"), "name", f"{name}.function.name")
    elif kind == "custom":
        _require_str(_require_object(choice, "custom", f"{name}.custom"), "name", f"{name}.custom.name")
    elif kind == "allowed_tools":
        allowed = _require_object(choice, "allowed_tools", f"{name}.allowed_tools")
        mode = _require_str(allowed, "mode", f"{name}.allowed_tools.mode")
        if mode not in _ALLOWED_TOOLS_MODES:
            _fail_choice(f"{name}.allowed_tools.mode", "mode", mode, _ALLOWED_TOOLS_MODES)
        tools = allowed.get("tools")
        if not isinstance(tools, list):
            _fail_required_or_type(
                allowed, "tools", f"{name}.allowed_tools.tools", "an array of tools", tools
            )
        for j, tool in enumerate(tools):
            if not isinstance(tool, dict):
                _fail_type(f"{name}.allowed_tools.tools[{j}]", "a tool object", tool)
    else:
        _fail_choice(f"{name}.type", "tool_choice type", kind, _TOOL_CHOICE_TYPES)


def _check_function_call(name: str, choice: Any) -> None:
    """The deprecated ``function_call``: "none", "auto" or ``{"name": ...}``."""
    if _is_str(choice):
        if choice not in _FUNCTION_CALL_MODES:
            _fail_choice(name, "function_call", choice, _FUNCTION_CALL_MODES)
        return
    if not isinstance(choice, dict):
        _fail_type(name, "a string or an object", choice)
    _require_str(choice, "name", f"{name}.name")


# -------------------------------------------------------------------------------------- sampling and options
_Check = Callable[[str, Any], None]


def _number_between(lo: float, hi: float) -> _Check:
    def check(name: str, value: Any) -> None:
        if not _is_number(value) or not lo <= value <= hi:
            _fail(name, f"expected a number between {lo:g} and {hi:g}, got {_shown(value)}")

    return check


def _integer_between(lo: int, hi: int | None) -> _Check:
    top = _INT64_MAX if hi is None else hi
    expected = f"an integer of at least {lo}" if hi is None else f"an integer between {lo} and {hi}"

    def check(name: str, value: Any) -> None:
        if not _is_int(value) or not lo <= value <= top:
            _fail(name, f"expected {expected}, got {_shown(value)}")

    return check


def _shown(value: Any) -> str:
    """A wrong value as an error message shows it: numbers by value, anything else by JSON type."""
    if _is_number(value):
        return repr(value)
    return _json_type(value)


def _check_bool(name: str, value: Any) -> None:
    if type(value) is not bool:
        _fail_type(name, "a boolean", value)


def _check_str(name: str, value: Any) -> None:
    if not _is_str(value):
        _fail_type(name, "a string", value)


def _check_stop(name: str, stop: Any) -> None:
    if _is_str(stop):
        return
    if not isinstance(stop, list):
        _fail_type(name, "a string or an array of strings", stop)
    if len(stop) > MAX_STOP_SEQUENCES:
        _fail(name, f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed, got {len(stop)}")
    for j, seq in enumerate(stop):
        if not _is_str(seq):
            _fail_type(f"{name}[{j}]", "a string", seq)


def _check_logit_bias(name: str, bias: Any) -> None:
    if not isinstance(bias, dict):
        _fail_type(name, "an object mapping token ids to numbers", bias)
    for token, value in bias.items():
        if not isinstance(token, str) or not (token.isascii() and token.isdigit()):
            _fail(name, f"key {token!r} is not a token id (a non-negative integer)")
        if not _is_number(value) or not -MAX_LOGIT_BIAS <= value <= MAX_LOGIT_BIAS:
            _fail(
                f"{name}.{token}",
                f"expected a number between -{MAX_LOGIT_BIAS} and {MAX_LOGIT_BIAS}, got {_shown(value)}",
            )


def _check_metadata(name: str, metadata: Any) -> None:
    if not isinstance(metadata, dict):
        _fail_type(name, "an object of strings", metadata)
    if len(metadata) > MAX_METADATA_PAIRS:
        _fail(name, f"at most {MAX_METADATA_PAIRS} key-value pairs are allowed, got {len(metadata)}")
    for key, value in metadata.items():
        if not isinstance(key, str):
            _fail(name, f"keys must be strings, got {_json_type(key)}")
        if len(key) > MAX_METADATA_KEY_CHARS:
            _fail(name, f"key {key[:20]!r}... is longer than {MAX_METADATA_KEY_CHARS} characters")
        if not _is_str(value):
            _fail_type(f"{name}.{key}", "a string", value)
        if len(value) > MAX_METADATA_VALUE_CHARS:
            _fail(f"{name}.{key}", f"value is longer than {MAX_METADATA_VALUE_CHARS} characters")


def _check_stream_options(name: str, options: Any) -> None:
    if not isinstance(options, dict):
        _fail_type(name, "an object", options)
    _optional_bool(options, "include_usage", f"{name}.include_usage")
    _optional_bool(options, "include_obfuscation", f"{name}.include_obfuscation")


def _check_response_format(name: str, fmt: Any) -> None:
    if not isinstance(fmt, dict):
        _fail_type(name, "an object", fmt)
    kind = _require_str(fmt, "type", f"{name}.type")
    if kind not in _RESPONSE_FORMATS:
        _fail_choice(f"{name}.type", "response format type", kind, _RESPONSE_FORMATS)
    if kind == "json_schema":
        spec = _require_object(fmt, "json_schema", f"{name}.json_schema")
        _require_name(spec, "name", f"{name}.json_schema.name")
        _optional_str(spec, "description", f"{name}.json_schema.description")
        _optional_object(spec, "schema", f"{name}.json_schema.schema")
        _optional_bool(spec, "strict", f"{name}.json_schema.strict")


# Optional top-level fields and their checks; a field not listed here is kept and passed through unchecked.
_CHAT_PARAMS: dict[str, _Check] = {
    "temperature": _number_between(0, 2),
    "top_p": _number_between(0, 1),
    "presence_penalty": _number_between(-2, 2),
    "frequency_penalty": _number_between(-2, 2),
    "max_tokens": _integer_between(1, None),
    "max_completion_tokens": _integer_between(1, None),
    "n": _integer_between(1, MAX_N),
    "seed": _integer_between(_INT64_MIN, _INT64_MAX),
    "logprobs": _check_bool,
    "top_logprobs": _integer_between(0, MAX_TOP_LOGPROBS),
    "logit_bias": _check_logit_bias,
    "stop": _check_stop,
    "stream": _check_bool,
    "stream_options": _check_stream_options,
    "response_format": _check_response_format,
    "tools": _check_tools,
    "tool_choice": _check_tool_choice,
    "parallel_tool_calls": _check_bool,
    "functions": _check_functions,
    "function_call": _check_function_call,
    "user": _check_str,
    "metadata": _check_metadata,
}


# ------------------------------------------------------------------------------------------------ embeddings
def _check_embedding_input(body: dict[str, Any]) -> None:
    data = body.get("input")
    if type(data) is str or isinstance(data, str):
        if not data:
            _fail("input", "must not be an empty string")
        return
    if not isinstance(data, list):
        _fail_required_or_type(
            body, "input", "input", "a string, an array of strings or an array of token arrays", data
        )
    if not data:
        _fail("input", "must not be an empty array")
    if len(data) > MAX_EMBEDDING_INPUTS:
        _fail("input", f"too many inputs: {len(data)}, the limit is {MAX_EMBEDDING_INPUTS}")
    first = data[0]
    if _is_str(first):
        for j, item in enumerate(data):
            if type(item) is not str or not item:
                if not _is_str(item):
                    _fail_type(f"input[{j}]", "a string (every input must be a string like the first)", item)
                if not item:
                    _fail(f"input[{j}]", "must not be an empty string")
    elif _is_int(first):
        _check_tokens(data, "input")
    elif isinstance(first, list):
        for j, tokens in enumerate(data):
            if not isinstance(tokens, list):
                _fail_type(f"input[{j}]", "an array of tokens (every input must be a token array)", tokens)
            if not tokens:
                _fail(f"input[{j}]", "must not be an empty array")
            _check_tokens(tokens, f"input[{j}]")
    else:
        _fail_type("input[0]", "a string, a token (integer) or an array of tokens", first)


def _check_tokens(tokens: list[Any], param: str) -> None:
    for j, token in enumerate(tokens):
        if type(token) is not int or token < 0:  # fast check; the slow one below also takes int subclasses
            if _is_int(token) and token >= 0:
                continue
            _fail(f"{param}[{j}]", f"expected a token id (a non-negative integer), got {_shown(token)}")


def _check_dimensions(name: str, value: Any) -> None:
    if not _is_int(value) or value < 1:
        _fail(name, f"expected an integer of at least 1, got {_shown(value)}")


def _check_encoding_format(name: str, value: Any) -> None:
    if value not in _ENCODING_FORMATS:
        _fail_choice(name, "encoding_format", value, _ENCODING_FORMATS)


_EMBEDDING_PARAMS: dict[str, _Check] = {
    "encoding_format": _check_encoding_format,
    "dimensions": _check_dimensions,
    "user": _check_str,
}
