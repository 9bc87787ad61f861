"""The operator: kopf handlers and the global control loop, adapters around the pure planner."""
