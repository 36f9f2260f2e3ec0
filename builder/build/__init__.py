"""The build half: contexts, sources, labels, the scheduler and its workers, one run."""
