"""The semantic cache: near-duplicate prompts answered from cache, tuned for precision first.

A pipeline layer right after the exact cache (``layer``). The request's partition (``partition``: everything
but the last user turn, hashed) must match exactly; the last user turn is embedded (``embedder``: the bundled
all-MiniLM-L6-v2 int8 model, or a model group's embeddings API), searched in the partition's vectors
(``index``: exact numpy search while small, faiss HNSW past a size; persisted beside the SQLite cache
(``persist``) or shared through Redis (``shared``)) and judged by the matcher (``matcher``: a per-group
threshold raised by feedback, and ``guards`` that veto matches differing in numbers, dates, names, negation or
comparison). ``calibrate`` (and ``slipstream semantic calibrate``) picks a threshold from labelled pairs.

Off by default; a model group turns it on with ``semantic: {enabled: true}``. It needs the ``semantic`` extra
(``pip install 'slipstream[semantic]'``); nothing here is imported unless a group turns it on, so the rest of
slipstream works without it.
"""
