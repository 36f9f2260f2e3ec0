"""kiln: build families of container images from Jinja2 Dockerfile templates."""

__version__ = "0.1.0"
