"""tfp's MLflow plugins, registered as entry points in ``setup.cfg`` (MLflow finds them; nothing to import by hand).

* ``mlflow.app`` ``tfp`` and ``tfp-basic-auth`` (:mod:`.server`): ``mlflow server --app-name tfp`` serves MLflow as
  usual plus the knowledge cloud's web page and REST API under ``/tfp/``; ``tfp-basic-auth`` is the same on top of
  MLflow's ``basic-auth`` app.
* ``mlflow.run_context_provider`` ``tfp`` (:mod:`.providers`): runs started through tfp carry ``tfp.version`` and the
  cloud's spec id.
* ``mlflow.request_header_provider`` ``tfp`` (:mod:`.providers`): inside the server, the ``/tfp/`` API reads the cloud
  with the caller's own credentials, so MLflow's permissions decide what each user sees.
"""
