"""Image sources: a local tree, a git commit or a download, as a reproducible tar."""
