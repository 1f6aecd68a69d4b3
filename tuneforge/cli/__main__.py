"""`python -m tuneforge.cli ...` (torchrun and the tests start the command this way)."""

from tuneforge.cli import main

main()
