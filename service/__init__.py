"""The purification sidecar: FastAPI + onnxruntime. Imports no torch."""
