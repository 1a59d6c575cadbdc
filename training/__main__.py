"""`python -m training`: train, pack and evaluate paella-mini."""

from training.cli import main

main()
