"""Solving problems on an engine: the solver (requests, votes, early stops) and the vote itself."""
