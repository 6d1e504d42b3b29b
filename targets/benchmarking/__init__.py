"""``edge-sam bench``: one table over every way of running the model, split by job: what to time
and the artifacts to export first (specs.py), one worker process per runtime (worker.py), the
interleaved timing rounds (run.py), and the table and report files (render.py)."""
