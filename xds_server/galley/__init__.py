"""Galley: loading and validating Istio API documents into the mesh model."""
