"""The token estimate: its counting rules, and its accuracy on English against exact BPE counts."""

from slipstream.limits.tokens import (
    ATTACHMENT_TOKENS,
    DEFAULT_COMPLETION_TOKENS,
    IMAGE_TOKENS,
    IMAGE_TOKENS_LOW,
    MESSAGE_OVERHEAD,
    NAME_OVERHEAD,
    REPLY_PRIMING,
    estimate_text_tokens,
    estimate_tokens,
)

# Exact counts of these sentences in cl100k_base and o200k_base (measured with the bpe-openai tokenizer).
ENGLISH = [
    ("The quick brown fox jumps over the lazy dog.", 10, 10),
    ("How do I improve my English speaking skills quickly?", 10, 10),
    (
        "Summarize the following article in three bullet points, focusing on the economic consequences of "
        "the policy change described by the author.",
        25,
        25,
    ),
    (
        "What are the best ways to learn machine learning if I already know Python and some statistics?",
        18,
        18,
    ),
    (
        "Write a short poem about the ocean at night, with a calm and reflective tone, in four stanzas of "
        "four lines each.",
        27,
        26,
    ),
]
FRAME = MESSAGE_OVERHEAD + REPLY_PRIMING  # one message's overhead plus the reply priming


def _chat(*messages, **fields):
    return {"model": "m", "messages": list(messages), **fields}


def _user(content):
    return {"role": "user", "content": content}


def test_english_prompts_land_near_exact_counts():
    """Each sentence within 25% (measured on short questions: p90 18%, p99 30%), the lot within 10%."""
    total_estimate = total_cl100k = total_o200k = 0
    for text, cl100k, o200k in ENGLISH:
        estimate = estimate_tokens(_chat(_user(text))) - DEFAULT_COMPLETION_TOKENS
        for exact in (cl100k, o200k):
            assert abs(estimate - (exact + FRAME)) <= 0.25 * (exact + FRAME), text
        total_estimate += estimate
        total_cl100k += cl100k + FRAME
        total_o200k += o200k + FRAME
    for total in (total_cl100k, total_o200k):
        assert abs(total_estimate - total) <= 0.10 * total


def test_text_counts_ascii_by_four_and_a_half_characters():
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("a") == 1
    assert estimate_text_tokens("a" * 9) == 2
    assert estimate_text_tokens("a" * 10) == 3
    assert estimate_text_tokens("a" * 900) == 200


def test_text_counts_what_chars_over_four_would_miss_in_other_scripts():
    # Two-byte letters count half a token each, three-byte CJK characters one each.
    assert estimate_text_tokens("привет") == 3  # 6 Cyrillic letters
    assert estimate_text_tokens("東京は日本の首都") == 8
    assert estimate_text_tokens("café") == 2  # 3 ASCII (0.67) + 1 extra byte (0.5), rounded up
    assert estimate_text_tokens("東京" * 50) == 100  # where chars/4 would say 25


def test_completion_allowance_defaults_and_follows_the_caps():
    base = estimate_tokens(_chat(_user("hi")), completion_default=0)
    assert base == FRAME + 1
    assert estimate_tokens(_chat(_user("hi"))) == base + DEFAULT_COMPLETION_TOKENS
    assert estimate_tokens(_chat(_user("hi"), max_tokens=100)) == base + 100
    assert estimate_tokens(_chat(_user("hi"), max_tokens=100, max_completion_tokens=40)) == base + 40
    assert estimate_tokens(_chat(_user("hi"), max_completion_tokens=40, n=3)) == base + 120
    assert estimate_tokens(_chat(_user("hi"), max_tokens=None)) == base + DEFAULT_COMPLETION_TOKENS
    assert estimate_tokens(_chat(_user("hi"), max_tokens=True)) == base + DEFAULT_COMPLETION_TOKENS


def test_every_message_pays_its_overhead_and_name():
    one = estimate_tokens(_chat(_user("hello")), completion_default=0)
    two = estimate_tokens(_chat(_user("hello"), _user("hello")), completion_default=0)
    assert two - one == MESSAGE_OVERHEAD + estimate_text_tokens("hello")
    named = estimate_tokens(_chat({"role": "user", "content": "hello", "name": "ann"}), completion_default=0)
    assert named - one == NAME_OVERHEAD + 1


def test_parts_images_and_attachments():
    body = _chat(
        _user(
            [
                {"type": "text", "text": "a" * 18},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                {"type": "file", "file": {"file_id": "f1"}},
            ]
        )
    )
    expected = FRAME + 4 + IMAGE_TOKENS + IMAGE_TOKENS_LOW + 2 * ATTACHMENT_TOKENS
    assert estimate_tokens(body, completion_default=0) == expected


def test_tools_and_tool_calls_count_as_their_json():
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    plain = estimate_tokens(_chat(_user("hi")), completion_default=0)
    with_tools = estimate_tokens(_chat(_user("hi"), tools=tools), completion_default=0)
    assert with_tools - plain >= len('{"name":"lookup","parameters":{"type":"object"}}') // 5
    call = {
        "role": "assistant",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}
        ],
    }
    assert estimate_tokens(_chat(_user("hi"), call), completion_default=0) > plain + MESSAGE_OVERHEAD


def test_embeddings_inputs():
    assert estimate_tokens({"model": "e", "input": "a" * 45}) == 10
    assert estimate_tokens({"model": "e", "input": ["a" * 45, "a" * 9]}) == 12
    assert estimate_tokens({"model": "e", "input": [[1, 2, 3], [4, 5]]}) == 5
    assert estimate_tokens({"model": "e", "input": [1, 2, 3, 4]}) == 4
    assert estimate_tokens({"model": "e"}) == 0


def test_a_malformed_body_is_estimated_not_rejected():
    # Validation is the schema's job; the estimate must never be the thing that raises.
    body = {
        "messages": [None, {"role": "user"}, {"role": "user", "content": [None, {"type": "text"}]}],
        "tools": [{"bad": object()}],
    }
    assert estimate_tokens(body, completion_default=0) == REPLY_PRIMING + 3 * MESSAGE_OVERHEAD + 1
