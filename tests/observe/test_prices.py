from slipstream.observe.prices import base_model, load_table, price_for
from slipstream.providers.base import Price


def test_known_models_are_priced():
    assert price_for("openai", "gpt-4o-mini") == Price(input=0.15, output=0.6, cached_input=0.075)
    assert price_for("anthropic", "claude-sonnet-4-5") == Price(input=3.0, output=15.0, cached_input=0.3)
    assert price_for("gemini", "gemini-2.5-flash") == Price(input=0.3, output=2.5, cached_input=0.03)


def test_dated_and_prefixed_ids_match_their_base_entry():
    assert price_for("openai", "gpt-4o-mini-2024-07-18") == price_for("openai", "gpt-4o-mini")
    assert price_for("anthropic", "claude-sonnet-4-5-20250929") == price_for("anthropic", "claude-sonnet-4-5")
    assert price_for("anthropic", "claude-sonnet-4-20250514") == price_for("anthropic", "claude-sonnet-4")
    assert price_for("anthropic", "claude-opus-4-0") == price_for("anthropic", "claude-opus-4")
    assert price_for("gemini", "models/gemini-2.5-pro") == price_for("gemini", "gemini-2.5-pro")
    flash_lite = price_for("gemini", "gemini-2.5-flash-lite-preview-06-17")
    assert flash_lite == price_for("gemini", "gemini-2.5-flash-lite")
    assert price_for("google", "gemini-2.5-flash-001") == price_for("gemini", "gemini-2.5-flash")
    assert base_model("GPT-4.1-Mini-2025-04-14") == "gpt-4.1-mini"


def test_no_prefix_guessing_for_unknown_models():
    # Neither is in the table; pricing them as gpt-5 / gpt-4o-mini would be confidently wrong.
    assert price_for("openai", "gpt-5-pro") is None
    assert price_for("openai", "gpt-4o-mini-audio") is None
    assert price_for("openai", "gpt-5-nano") != price_for("openai", "gpt-5")
    assert price_for("sim", "gpt-4o") is None
    assert price_for("nobody", "x") is None


def test_override_wins():
    own = Price(input=9.0, output=9.0)
    assert price_for("openai", "gpt-4o", own) is own
    assert price_for("sim", "anything", own) is own


def test_table_covers_the_required_models_and_names_its_sources():
    table = load_table()
    required = {
        "openai": ["gpt-5", "gpt-5-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4o", "gpt-4o-mini", "o4-mini"],
        "anthropic": ["claude-opus-4-5", "claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5"],
        "gemini": ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite"],
    }
    for provider, models in required.items():
        assert provider in table["sources"]
        for model in models:
            entry = table["models"][provider][model]
            assert entry["output"] >= entry["input"] > entry["cached_input"] > 0
    assert table["checked"]


def test_cost_of_usage_with_table_price():
    price = price_for("openai", "gpt-4o-2024-08-06")
    assert price is not None
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 400}}
    assert price.cost(usage) == (600 * 2.5 + 400 * 1.25 + 100 * 10.0) / 1e6
