"""Inference backends: the registry (light, read by the spec, the planner and the operator) and one
module per runtime, imported only by the pod or process that runs it."""
