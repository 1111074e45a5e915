"""fixloop's detectors: each check measures one defect kind of the failure library.

Entry points: :func:`fixloop.checks.engine.check_files` (files in, report out) and
:func:`fixloop.checks.engine.run_checks` (a :class:`fixloop.checks.context.CheckContext` in, report
out); ``fixloop.check`` wraps them for paths, bytes and arrays. Both may run in several threads of
one process at once, each with its own context. Importing the checks changes no process state; an
application that owns its process may call :func:`fixloop.checks.models.quiet_native_logs` once at
start to hide MediaPipe's native start-up notes on stderr.
"""
