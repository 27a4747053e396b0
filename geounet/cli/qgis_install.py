"""``geounet qgis-install``: put the QGIS plugin into a QGIS profile and point it at geounet."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("qgis-install")
@click.option(
    "--profile",
    type=click.Path(path_type=Path),
    default=None,
    help="QGIS profile folder (default: this user's 'default' QGIS 3 profile).",
)
@click.option("--link", is_flag=True, help="Symlink the plugin instead of copying it.")
@click.option(
    "--executable",
    default=None,
    help="geounet command the plugin runs (default: this environment's geounet).",
)
@click.option(
    "--source",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="The plugin folder to install (default: qgis/geounet_qgis of geounet's source tree).",
)
def command(profile: Path | None, link: bool, executable: str | None, source: Path | None) -> None:
    """Install the geounet Processing provider into QGIS (restart QGIS afterwards).

    \b
    Example:
      geounet qgis-install
    """
    from geounet.app.qgis_install import install_qgis_plugin

    target = install_qgis_plugin(profile, link=link, executable=executable, source=source)
    click.echo(f"installed {target}; restart QGIS, then open Processing > Toolbox > geounet")
