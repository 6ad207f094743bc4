"""Offline training, evaluation and export of purifiers (torch + torchvision)."""
