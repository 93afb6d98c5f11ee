"""The real-Asynq regression tests use ``asynq_server`` and ``go_broker`` (tests/conftest.py)."""
