"""The BentoML prediction API that journey-orchestration systems call."""
