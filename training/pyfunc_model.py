"""MLflow "models from code" entry point of every CX Predict task model.

MLflow executes this file when it logs or loads a model (``tracking.log_task`` passes its path as
``python_model``); nothing in the project imports it. The model's state is the ``bundle`` artifact
(LightGBM model files + ``spec.json``, see ``model_bundle``), and ``model_bundle.py`` itself is
logged alongside (``code_paths``), so loading needs numpy, pandas, lightgbm and mlflow only.

Usage once logged::

    model = mlflow.pyfunc.load_model("models:/cx-churn@champion")
    model.predict(features)                              # the task's outputs, one row per input row
    model.predict(features, params={"as_of": "2026-11-01"})  # ... for the window starting then
    model.unwrap_python_model().drivers(features, k=5)   # top-k SHAP drivers per row
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class CXPredictModel(PythonModel):
    """Thin pyfunc wrapper: all logic lives in ``ModelBundle``."""

    def load_context(self, context) -> None:
        try:
            from model_bundle import ModelBundle  # the copy logged with the model
        except ImportError:  # pragma: no cover - logged without code_paths
            from training.model_bundle import ModelBundle
        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """``params["as_of"]``: when the predicted window starts (ISO time; empty or absent: now)."""
        return self.bundle.predict(model_input, (params or {}).get("as_of") or None)

    def drivers(self, model_input: pd.DataFrame, k: int = 5, head=None) -> pd.DataFrame:
        """Top-k drivers per row: row (position), rank, feature, value, impact (raw score units)."""
        return self.bundle.drivers(model_input, k=k, head=head)


mlflow.models.set_model(CXPredictModel())
