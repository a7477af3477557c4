"""tfp-mlflow's MLflow plugins, one module per plugin type, registered as entry points (``setup.cfg``); MLflow finds
them, nothing is imported by hand. Torch-free: a tracking server installs them with the tfp-mlflow core only.

* ``mlflow.app: tfp`` (:mod:`.app`): ``mlflow server --app-name tfp`` serves MLflow as usual plus the knowledge
  cloud's web page and REST API under ``/tfp/`` (what they answer: :mod:`.service`);
* ``mlflow.app: tfp-basic-auth`` (:mod:`.auth`): the same on top of MLflow's ``basic-auth`` app, where a
  contribution's contributor is the authenticated user;
* ``mlflow.run_context_provider: tfp`` (:mod:`.run_context`): runs started through tfp carry ``tfp.version`` and
  the cloud's spec id;
* ``mlflow.request_header_provider: tfp`` (:mod:`.request_header`): inside the server, the ``/tfp/`` API reads the
  cloud with the caller's own credentials, so MLflow's permissions decide what each user sees.
"""
