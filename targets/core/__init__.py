"""What every runtime package shares: the Target and Runner interfaces, the deploy contract,
the manifest, the registry, calibration image sources and validation prompts."""
