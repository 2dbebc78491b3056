"""hokusai-verify: does a deployed Hokusai MLflow gateway work, and if not, which layer is broken."""

__version__ = "0.1.0"
