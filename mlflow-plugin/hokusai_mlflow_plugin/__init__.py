"""MLflow auth-app plugin for the Hokusai gateway.

`authorization_function = hokusai_mlflow_plugin:authenticate` in MLflow's
auth ini makes MLflow trust the gateway's signed identity assertion instead
of Basic-auth passwords.
"""


def authenticate():
    # Imported on use so the key tool (`python -m hokusai_mlflow_plugin.keys`)
    # does not load Flask and MLflow.
    from .auth import authenticate as authenticate_assertion

    return authenticate_assertion()


__all__ = ["authenticate"]
