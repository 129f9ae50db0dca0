"""How much memory training takes (``memory``: the analytic model) and which batch and
levers fit a budget (``planner``, behind ``gptref plan``)."""
