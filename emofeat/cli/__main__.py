"""``python -m emofeat.cli`` (for torchrun)."""

from emofeat.cli import main

main()
