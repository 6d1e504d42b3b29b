"""``edge-sam deploy`` as a library: checkpoint -> artifacts for every installed target ->
validated on held-out images -> which artifact to ship per target, and why.

A package rather than one module: the steps (image split, job planning and reuse, app bundles,
the choice and summary) are separate concerns with their own tests, and the orchestration in
:mod:`.run` stays readable as a list of steps.
"""

from edge_sam.targets.deploy.run import DeployResult, deploy

__all__ = ["DeployResult", "deploy"]
