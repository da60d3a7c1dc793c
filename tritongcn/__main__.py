"""`python -m tritongcn ...` is the `tritongcn` command (and what `torchrun -m tritongcn` runs)."""

from .cli import main

main()
