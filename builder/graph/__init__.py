"""The image graph: Dockerfile parsing, the DAG and which images a run selects."""
