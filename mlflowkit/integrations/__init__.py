"""Bridges to the tools ML teams already use: MLflow (export) and OpenLineage (events).

Each bridge is an optional extra (``pip install 'mlflowkit[mlflow]'``,
``'mlflowkit[openlineage]'``) in its own module, imported only when used: importing
``mlflowkit`` or ``mlflowkit.integrations`` never imports MLflow or OpenLineage. The bridges
read run records (``mlflowkit.records``), never the store's files.
"""

from __future__ import annotations

__all__: list[str] = []
