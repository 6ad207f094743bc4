"""The purifier's residual as an attack detector (issue 24): `scores` (the residual
statistics over a set of images, thresholds), `study` (`python -m training.detection
CONFIG`: separation per attack and budget, statistic selection) and `adaptive` (the
attacker who also keeps the score low). The export-time calibration that writes the
card's thresholds is training/export/detection.py."""
