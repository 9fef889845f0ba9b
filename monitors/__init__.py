"""collapse-monitor's core: pure computations, schemas, configuration and I/O adapters at the edge.

The pure modules (``text``, ``profile``, ``indicators``, ``quantify``, ``rules``, ``simulate``) import
neither prefect nor mlflow; adapters (``tracking``, ``gx_rules``, ``ingest``) take their clients as arguments.
"""

__version__ = "0.1.0"
