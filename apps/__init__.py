"""fixloop's front ends: thin layers that parse a request, call :mod:`fixloop.agent.service` and
print or respond. Today the command line (:mod:`fixloop.apps.cli`)."""
