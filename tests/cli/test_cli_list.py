from typer.testing import CliRunner

from bastion.cli.app import app
from bastion.cli.listing import Kind


def test_every_entry_has_a_whole_sentence() -> None:
    """A headline that wraps in the module docstring is read to its end, not cut at the line break."""
    for kind in (Kind.attacks, Kind.defenses, Kind.models):
        result = CliRunner().invoke(app, ["list", kind.value])
        assert result.exit_code == 0, result.stderr
        # entries are indented under their kind (and family); a family's own line is one word
        entries = [line.strip() for line in result.stdout.splitlines()[1:] if len(line.split()) > 1]
        assert entries, result.stdout
        for line in entries:
            name, summary = line.split(maxsplit=1)
            assert summary.endswith((".", ")", ".)")), f"{kind.value} {name}: {summary!r}"
            assert summary.count("(") == summary.count(")"), f"{kind.value} {name}: {summary!r}"
