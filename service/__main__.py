"""`python -m service serve | api | worker`: the same as the `paella` command."""

from service.cli import main

main()
