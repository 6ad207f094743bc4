"""HTTP routes, thin: parsing and responses here, work in service.pipeline."""
