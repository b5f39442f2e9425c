"""Labels, LightGBM models, baselines and MLflow tracking for churn, next purchase and unmet needs."""
