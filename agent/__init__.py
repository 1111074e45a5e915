"""fixloop's entry points: the command line now; the repair loop, chat and bots build on it."""
