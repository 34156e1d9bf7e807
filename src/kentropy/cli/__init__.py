"""The `kentropy` command: `app.py` maps each command to its function (a thin typer layer)."""
