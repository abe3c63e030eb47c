"""``bcce models``: the Claude models Amazon Bedrock offers in a region, and which to use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from bcce.cli.context import get_app
from bcce.cli.output import echo_json

if TYPE_CHECKING:
    from bcce.aws.bedrock import ModelCatalog, ModelInfo, Recommendation
    from bcce.containers.application import Application

USE_CASES = ("coding", "review", "fast")  # bcce.aws.bedrock.USE_CASES, without importing it

_PROFILE_LABELS = {"SYSTEM_DEFINED": "cross-region", "APPLICATION": "application"}

_region_option = click.option(
    "--region", help="AWS region to ask (default: aws.region, then the AWS profile's region)."
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group()
def models() -> None:
    """List the Claude models Amazon Bedrock offers and recommend one for a use case."""


@models.command("list", short_help="List Anthropic models and inference profiles.")
@_region_option
@_json_option
@click.option(
    "--no-access-check",
    is_flag=True,
    help="Skip the per-model GetFoundationModelAvailability calls (faster; access shows unknown).",
)
@click.pass_context
def list_models(
    ctx: click.Context, region: str | None, as_json: bool, no_access_check: bool
) -> None:
    """Anthropic foundation models and inference profiles, with access status where known."""
    from bcce.aws.bedrock import discover

    catalog = discover(_client(get_app(ctx), region), check_access=not no_access_check)
    if as_json:
        echo_json(catalog.to_dict())
    else:
        _print_catalog(catalog)


@models.command(short_help="Recommend a model id for a use case.")
@click.option(
    "--use-case",
    type=click.Choice(USE_CASES),
    default="coding",
    show_default=True,
    help="coding: newest Sonnet; review: newest Opus or Sonnet; fast: newest Haiku.",
)
@_region_option
@_json_option
@click.pass_context
def recommend(ctx: click.Context, use_case: str, region: str | None, as_json: bool) -> None:
    """The model id to set as agent.model for a use case, preferring cross-region profiles."""
    from bcce.aws import bedrock

    catalog = bedrock.discover(_client(get_app(ctx), region))
    choice = bedrock.recommend(catalog.models, use_case, region=catalog.region)
    if as_json:
        echo_json({"region": catalog.region, **choice.to_dict(), "notes": list(catalog.notes)})
    else:
        _print_recommendation(choice, catalog)


def _client(app: Application, region: str | None) -> Any:
    """The application's bedrock client, or one for ``region`` when another region is asked for."""
    from bcce.aws.bedrock import aws_errors

    with aws_errors("create a Bedrock client", region=region):
        if region is None:
            return app.aws.bedrock()
        session = app.aws.session()
        if session.region_name == region:
            return app.aws.bedrock()
        from bcce.aws.session import create_client

        return create_client(session, app.settings().aws, "bedrock", region=region)


def _print_catalog(catalog: ModelCatalog) -> None:
    profiles = sum(1 for m in catalog.models if m.kind == "inference-profile")
    click.echo(
        f"{catalog.provider} models in {catalog.region}: "
        f"{len(catalog.models) - profiles} foundation models, {profiles} inference profiles"
    )
    if catalog.models:
        header = ("ID", "NAME", "KIND", "LIFECYCLE", "ACCESS", "INVOCATION", "STREAM")
        _print_table([header, *(_row(m) for m in catalog.models)])
    unknown = sorted({m.access.reason for m in catalog.models if m.access.status == "unknown"})
    for reason in unknown:
        click.echo(f"access unknown: {reason}")
    for note in catalog.notes:
        click.echo(click.style(f"note: {note}", fg="yellow"))


def _row(model: ModelInfo) -> tuple[str, ...]:
    if model.kind == "inference-profile":
        kind = "profile"
        label = _PROFILE_LABELS.get(model.profile_type or "", model.profile_type or "profile")
        invocation = f"{label} ({', '.join(model.regions)})"
    else:
        kind, invocation = "model", ", ".join(model.inference_types)
    stream = {True: "yes", False: "no", None: "?"}[model.streaming]
    return (model.id, model.name, kind, model.lifecycle, model.access.status, invocation, stream)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _print_recommendation(choice: Recommendation, catalog: ModelCatalog) -> None:
    click.echo(f"{choice.use_case} in {catalog.region}: {choice.model_id}")
    click.echo(f"  why: {choice.reason}")
    if choice.alternatives:
        click.echo(f"  alternatives: {', '.join(choice.alternatives)}")
    click.echo(
        f"  use it: agent.model: {choice.model_id}  (or BCCE_AGENT__MODEL={choice.model_id})"
    )
    for note in catalog.notes:
        click.echo(click.style(f"note: {note}", fg="yellow"))
