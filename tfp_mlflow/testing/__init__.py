"""Harnesses for tests and benchmarks, as ``optuna.testing`` is for Optuna: real servers on 127.0.0.1 and a load
generator. Not used by the library itself; torch-free.

* :mod:`.servers`: ``LocalServer`` (an ``mlflow server`` subprocess, with or without an app plugin and basic auth),
  ``ThreadServer`` (the same app served from a thread of this process: one per process, up in a second) and
  ``LocalPostgres`` (a throwaway PostgreSQL cluster);
* :mod:`.stores`: ``sqlite_uri`` (a new SQLite tracking store, its schema copied in place of seconds of migrations);
* :mod:`.load`: concurrent contributors and queriers against one cloud, with what they lost or saw half-written.
"""
