"""`python -m byorn.cli` (what `accelerate launch -m byorn.cli` runs): the `byorn` command."""

from byorn.cli import main

main()
