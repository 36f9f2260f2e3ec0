"""Publishing images with tag revisions: sync, promote, list, compare and their output files."""
