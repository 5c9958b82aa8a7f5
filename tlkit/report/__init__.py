"""A run's artefacts from an evaluation: ``files`` (JSON, CSV and PNG; ``write_report``, ``write_run_report``),
``html`` (the page) and ``terminal`` (the summary). It imports :mod:`tlkit.evaluation`, never the other way round."""
