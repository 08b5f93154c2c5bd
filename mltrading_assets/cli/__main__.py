"""`python -m mltrading_assets.cli` is the `mltrading` command."""

from mltrading_assets.cli.main import main

main()
