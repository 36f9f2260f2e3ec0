"""From template layers to rendered Dockerfiles: layers, template APIs, rendering, its cache."""
