"""The exact response cache: key, per-request directives, and the pipeline layer."""
