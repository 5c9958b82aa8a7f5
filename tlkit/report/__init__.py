"""A run's artefacts from an evaluation: ``files`` (JSON, CSV and PNG; ``write_report``, ``write_run_report``),
``html`` (the page) and ``terminal`` (the summary). It imports :mod:`tlkit.evaluation`, never the other way round.

``doctor_html`` draws the data doctor's ``doctor.html`` from a :class:`~tlkit.diagnosis.result.DoctorResult`
(``doctor_page_html``, ``doctor_section_html``, ``thumbnail_loader``, ``learning_curve_png``);
:func:`tlkit.diagnosis.write_doctor_report` writes it beside the doctor's other files."""
