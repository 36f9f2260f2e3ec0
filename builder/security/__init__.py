"""Security response: which images hold a package version, and SBOMs of an image."""
