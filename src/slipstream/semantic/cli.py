"""``slipstream semantic …``: tools for the semantic cache (``calibrate``).

Nothing heavy is imported until a command runs, so ``slipstream --help`` works without the semantic extra.
"""

from __future__ import annotations

import sys
from typing import Any

import click

__all__ = ["semantic"]


@click.group()
def semantic() -> None:
    """The semantic cache: calibrate its threshold on labelled pairs."""


@semantic.command()
@click.argument("pairs_file", metavar="PAIRS.jsonl", type=click.Path(exists=True, dir_okay=False))
@click.option("--target-precision", type=click.FloatRange(0.0, 1.0), default=0.95, show_default=True)
@click.option(
    "--holdout",
    type=click.FloatRange(0.0, 0.9),
    default=0.0,
    show_default=True,
    help="Share of the pairs held back: the threshold is chosen on the rest and reported on these.",
)
@click.option("--guards/--no-guards", default=True, show_default=True, help="Apply the default guards.")
@click.option("--top-k", type=click.IntRange(1, 100), default=4, show_default=True)
@click.option("--min-hits", type=click.IntRange(1), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def calibrate(
    pairs_file: str,
    target_precision: float,
    holdout: float,
    guards: bool,
    top_k: int,
    min_hits: int,
    as_json: bool,
) -> None:
    """Replay labelled pairs ({"a", "b", "duplicate"} lines) through the matcher with the local model and
    print the precision/recall curve and the threshold that meets TARGET_PRECISION with the highest recall."""
    from .embedder import LocalEmbedder, SemanticUnavailable

    try:
        embedder = LocalEmbedder()
    except SemanticUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    from .calibrate import Judge, Replay, choose_threshold, load_pairs, split_pairs
    from .guards import GuardConfig

    try:
        pairs = load_pairs(pairs_file)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    fit_pairs, held_pairs = split_pairs(pairs, 1.0 - holdout) if holdout else (pairs, [])
    try:
        replay = Replay(pairs, embedder.embed_sync, judge=Judge(pairs))
        result = replay.run(GuardConfig() if guards else GuardConfig.none(), top_k)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    fit_rows = replay.query_rows(fit_pairs)
    curve = result.curve(rows=fit_rows)
    chosen = choose_threshold(curve, target_precision, min_hits=min_hits)
    held = result.point(chosen.threshold, replay.query_rows(held_pairs)) if chosen and held_pairs else None
    report: dict[str, Any] = {
        "model": embedder.name,
        "pairs": len(pairs),
        "stored": len(replay.entries),
        "asked": int(fit_rows.sum()),
        "target_precision": target_precision,
        "guards": guards,
        "curve": [p.as_dict() for p in curve],
        "threshold": chosen.threshold if chosen else None,
        "chosen": chosen.as_dict() if chosen else None,
        "held_back": held.as_dict() if held else None,
    }
    if as_json:
        import orjson

        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        _print(report)
    if chosen is None:
        sys.exit(1)


def _print(report: dict[str, Any]) -> None:
    click.echo(
        f"model {report['model']}: {report['stored']} prompts stored, {report['asked']} asked, "
        f"guards {'on' if report['guards'] else 'off'}"
    )
    click.echo(f"{'threshold':>9}  {'hits':>6}  {'correct':>7}  {'precision':>9}  {'recall':>6}")
    for p in report["curve"]:
        if p["hits"]:
            click.echo(
                f"{p['threshold']:>9.4f}  {p['hits']:>6}  {p['correct']:>7}  "
                f"{p['precision']:>9.3f}  {p['recall']:>6.3f}"
            )
    chosen = report["chosen"]
    if chosen is None:
        click.echo(f"no threshold reaches precision {report['target_precision']}")
        return
    click.echo(
        f"threshold {chosen['threshold']}: precision {chosen['precision']:.3f}, recall {chosen['recall']:.3f}"
    )
    held = report["held_back"]
    if held is not None:
        click.echo(f"on the held-back pairs: precision {held['precision']:.3f}, recall {held['recall']:.3f}")
