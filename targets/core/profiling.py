"""What every runtime's own profile of an artifact (``Target.profiled_layer_ms``) shares."""

# Timed runs of a profile, after one untimed run; each operator's time is the median over them,
# so one slow run does not move a layer.
PROFILED_RUNS = 5
