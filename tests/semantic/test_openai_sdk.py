"""The official openai SDK, through the in-process HTTP transport: semantic hits, their headers, a streamed
hit, and the feedback header on a request sent again."""

from __future__ import annotations

import openai

from slipstream import Slipstream

from .conftest import semantic_config

FIRST = [{"role": "user", "content": "What are some good tips for self study?"}]
SIMILAR = [{"role": "user", "content": "What are the smart tips for self studying?"}]


async def test_the_openai_sdk_sees_semantic_hits(tmp_path, embedder):
    async with Slipstream(semantic_config(tmp_path)) as slip:
        client = openai.AsyncOpenAI(api_key="unused", http_client=slip.http_client(), max_retries=0)
        first = await client.chat.completions.create(model="sim", messages=FIRST)
        raw = await client.chat.completions.with_raw_response.create(model="sim", messages=SIMILAR)
        assert raw.headers["x-slipstream-cache"] == "semantic-hit"
        assert 0.9 <= float(raw.headers["x-slipstream-similarity"]) < 1.0
        assert raw.parse().choices[0].message.content == first.choices[0].message.content

        stream = await client.chat.completions.create(model="sim", messages=SIMILAR, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == first.choices[0].message.content

        retried = await client.chat.completions.with_raw_response.create(
            model="sim", messages=SIMILAR, extra_headers={"x-slipstream-feedback": "bad"}
        )
        assert retried.headers["x-slipstream-cache"] == "miss"
        assert slip.stats()["semantic"]["reported_bad"] == 1
        await client.close()
