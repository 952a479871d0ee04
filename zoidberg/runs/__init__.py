"""Runs: the run store, run kinds, jobs and executors, the worker and the progress read from events."""
