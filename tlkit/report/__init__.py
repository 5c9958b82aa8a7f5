"""A run's artefacts from an evaluation: files (JSON, CSV, PNG), the HTML page, the terminal summary."""
