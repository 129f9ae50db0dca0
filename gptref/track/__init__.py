"""Regression tracking (``gptref track``): ``workloads`` (the tracked suite and its worker),
``abtest`` (two builds in interleaved rounds), ``stats`` (the verdict), ``counts``
(instructions under callgrind, ops, peak bytes), ``store`` (the history on disk) and
``trend`` (the report)."""
