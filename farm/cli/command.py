"""The class of every `farm` command: Typer's, with arguments written in help as click and man
pages write them.

Typer 0.29 writes a required argument in braces in the usage line (`farm cancel [OPTIONS]
{JOB_ID}...`, which reads as a shell's brace expansion) and a list argument's Python type
(`JOB_ID <list[int]>`). metavar= renames an argument but keeps both, so each command takes
`cls=Command`: `farm cancel [OPTIONS] JOB_ID...`, and `JOB_ID... <int>` under Arguments.
"""

from __future__ import annotations

import re
from typing import Any

from typer import Context
from typer.core import TyperArgument, TyperCommand


def _name(arg: TyperArgument, optional: str = "[{}]") -> str:
    """JOB_ID, JOB_ID... for several; in brackets where it may be left out."""
    name = (arg.metavar or (arg.name or "").upper()) + ("..." if arg.nargs != 1 else "")
    return name if arg.required else optional.format(name)


def _type(arg: TyperArgument, ctx: Context) -> str:
    """`<int>` for several ints: the dots after the name already say there may be several."""
    return re.sub(r"^<list\[(.*)\]>$", r"<\1>", arg.display_type_rich(ctx) or "")


class Command(TyperCommand):
    """Both paths of Typer's help (plain and rich) take the usage line from collect_usage_pieces."""

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        arguments = [p for p in self.get_params(ctx) if isinstance(p, TyperArgument) and not p.hidden]
        return ([self.options_metavar] if self.options_metavar else []) + [_name(a) for a in arguments]

    def format_options(self, ctx: Context, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
        for p in self.get_params(ctx):
            if (row := p.get_help_record(ctx)) is None:
                continue
            if isinstance(p, TyperArgument):  # no brackets here: the help says whether it is required
                sections["Arguments"].append((f"{_name(p, '{}')} {_type(p, ctx)}".strip(), row[1]))
            else:
                sections["Options"].append(row)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
