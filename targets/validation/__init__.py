"""Validation: drift of runners against the fp32 model (drift.py), the report files (report.py),
per-layer drift (layers.py and the runtime adapters), peak memory of one runner (subprocess_rss.py)."""
