"""gptref's own mutation score (mutmut) on data, loss, schedule and step: run_mutmut.sh, summarize.py."""
