"""The Feast feature repository of CX Predict (``feast -c features/feature_repo ...``)."""
