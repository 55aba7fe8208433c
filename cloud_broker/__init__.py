"""cloud_broker package."""
