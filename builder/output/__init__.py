"""What a user reads: the live progress view, the run summary, listings, kiln-registry's text."""
