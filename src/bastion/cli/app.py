"""The `bastion` command: a thin shell over the library. A user error is one line on stderr and exit 2."""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from bastion.cli import attack, audit, certify, export, lifecycle, listing, ownership, runs, serve, train
from bastion.cli import eval as eval_cmd
from bastion.core.errors import BastionError

__all__ = ["app", "main"]


class _Group(TyperGroup):
    """Turns every `BastionError` raised by a command into one line on stderr and its exit code."""

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except BastionError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None


app = typer.Typer(
    cls=_Group,
    name="bastion",
    help="Attack, defend and audit image classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("list")(listing.list_)
app.command("train")(train.train)
app.command("eval")(eval_cmd.eval_)
app.command("attack")(attack.attack)
app.command("certify")(certify.certify)
app.command("mia")(lifecycle.mia)
app.command("ood")(lifecycle.ood)
app.command("poison")(lifecycle.poison)
app.command("protect")(lifecycle.protect)
app.command("bitflip")(lifecycle.bitflip)
app.command("extract")(lifecycle.extract)
app.command("sfl-extract")(lifecycle.sfl_extract)
app.command("ownership")(ownership.ownership)
app.add_typer(ownership.watermark_app)
app.command("audit")(audit.audit)
app.command("report")(runs.report)
app.command("compare")(runs.compare)
app.command("check")(runs.check)
app.add_typer(export.export_app)
app.command("serve")(serve.serve)


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())
