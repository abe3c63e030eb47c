"""``bcce config``: the effective configuration and where each value came from."""

from __future__ import annotations

import click
import yaml

from bcce.cli.context import get_app
from bcce.cli.output import echo_json, format_value


@click.group()
def config() -> None:
    """Show and validate the layered configuration."""


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--sources", is_flag=True, help="Show the layer each value came from.")
def show(as_json: bool, sources: bool) -> None:
    """Print the effective configuration (secrets masked)."""
    from bcce.settings.render import effective_config, sourced_values

    settings = get_app().settings()
    if not sources:
        data = effective_config(settings)
        if as_json:
            echo_json(data)
        else:
            click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
        return
    rows = sourced_values(settings)
    if as_json:
        echo_json(
            {
                "layers": settings.provenance.sources,
                "values": {
                    row.key: {
                        "value": row.value,
                        "layer": row.origin.layer if row.origin else "default",
                        "source": row.origin.detail if row.origin else "built-in default",
                    }
                    for row in rows
                },
            }
        )
        return
    width = min(max(len(row.key) + len(format_value(row.value)) for row in rows) + 3, 56)
    for row in rows:
        text = f"{row.key} = {format_value(row.value)}"
        origin = str(row.origin) if row.origin else "default: built-in default"
        click.echo(f"{text.ljust(width)}  {click.style('# ' + origin, dim=True)}")


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def validate(as_json: bool) -> None:
    """Load and validate every configuration layer; exit 3 on the first problem."""
    settings = get_app().settings()
    layers = settings.provenance.sources
    if as_json:
        echo_json({"valid": True, "layers": layers})
        return
    click.echo(f"configuration is valid ({len(layers)} layers)")
    for layer in layers:
        click.echo(f"  {layer}")
