"""Validation: drift of runners against the fp32 model (drift.py), the report files (report.py),
the validate call (validate.py), peak memory of one runner (subprocess_rss.py). Per-layer drift
is below, in targets/core (layer_drift.py, pt2e_layer_drift.py), since runtime packages fill it in."""
