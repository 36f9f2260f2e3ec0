"""Kolla's template API (--template-api kolla): options, settings, repos.yaml, functions."""
