"""``edge-sam app``: a local web page comparing the fp32 model with exported artifacts, mask by mask."""
