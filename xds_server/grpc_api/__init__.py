"""The thin gRPC layer: servicers that feed the protocol state machines."""
