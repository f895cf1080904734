"""The partition key: everything but the last user turn's text must match exactly."""

from slipstream.semantic.partition import last_user_text, partition_key


def body(question="How do I learn Python?", *, model="sim", system="You are terse.", history=(), **extra):
    messages = [{"role": "system", "content": system}, *history, {"role": "user", "content": question}]
    return {"model": model, "messages": messages, **extra}


def test_only_the_last_user_text_may_differ():
    assert partition_key("default", body("How do I learn Python?")) == partition_key(
        "default", body("What is the best way to learn Python?")
    )


def test_everything_else_separates_partitions():
    base = partition_key("default", body())
    different = [
        partition_key("other-tenant", body()),
        partition_key("default", body(model="gpt-4o")),
        partition_key("default", body(system="You are verbose.")),
        partition_key(
            "default",
            body(history=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]),
        ),
        partition_key("default", body(temperature=0.2)),
        partition_key(
            "default", body(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
        ),
        partition_key("default", body(response_format={"type": "json_object"})),
    ]
    assert base not in different
    assert len(set(different)) == len(different)


def test_fields_that_cannot_change_the_answer_are_ignored():
    assert partition_key("default", body()) == partition_key("default", body(stream=True, user="u1"))


def test_namespace_prefixes_the_key():
    assert partition_key("tenant-a", body()).startswith("tenant-a:")


def test_last_user_text():
    assert last_user_text(body("  Why is the sky blue? ")) == "Why is the sky blue?"
    parts = {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    assert last_user_text({"messages": [parts]}) == "a\nb"


def test_requests_that_are_not_a_plain_user_question_are_not_eligible():
    assistant_last = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "prefill"}]
    }
    image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "x"}},
                ],
            }
        ]
    }
    assert last_user_text(assistant_last) is None
    assert last_user_text(image) is None
    assert last_user_text({"messages": [{"role": "user", "content": "   "}]}) is None
    assert last_user_text({"messages": []}) is None
