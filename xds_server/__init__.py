"""pocketmesh: Pilot (xDS server) and Galley (Istio config) in one small package."""

__version__ = "0.1.0"
