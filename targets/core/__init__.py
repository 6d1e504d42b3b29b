"""What every runtime package shares: the Target interface and its declared options, the artifact
runner over a manifest, the manifest, the registry, the toolchain log, and per-layer drift (the
rows a runtime's layers.py fills in, and its PT2E form)."""
