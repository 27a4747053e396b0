"""``python -m geounet`` runs the command line."""

from geounet.cli.main import main

main()
