"""The project's shared test and bench tooling: the real parts started on
loopback (harness), the local stack and its switches (local_stack), the
MLflow client sessions (mlflow_scenarios) and the benchmark (bench).
Installed editable into .venv by scripts/setup.sh."""
