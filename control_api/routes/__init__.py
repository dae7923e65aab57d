"""HTTP resources: one Controller (or handler) per resource."""
