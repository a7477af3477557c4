"""Every private name of an upstream package tfp uses, one module per upstream, each with the versions it was
checked against (``CHECKED``: the minor versions ``constraints.txt`` pins and CI tests); ``tests/test_compat.py``
fails, naming the module, when an installed version leaves that range, and checks each name still means what tfp
uses it for. Nothing else in tfp reaches into an upstream's internals (the same test says so). To move a pin:
rerun that test and the study and server suites on the new version, then widen the range."""
