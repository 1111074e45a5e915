"""fixloop's detectors: each check measures one defect kind of the failure library.

Entry points: :func:`checks.engine.check_files` (files in, report out) and
:func:`checks.engine.run_checks` (a :class:`checks.context.CheckContext` in, report out).
"""
