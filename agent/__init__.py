"""fixloop's brain: the repair loop (state, graph, triage, planner, verify, review sheet, runner) and
the service layer every front end calls (:mod:`fixloop.agent.service`). It never prints and never
exits; the front ends in :mod:`fixloop.apps` do."""
