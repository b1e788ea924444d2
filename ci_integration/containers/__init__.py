"""Containers that go away with their job: the signal-safe run, the variables CI
process-tree killers match on, owner labels, and the janitor for what still leaks."""
