"""The ``gptref`` command line: ``main`` builds argparse from each subcommand's ``Args``
dataclass (``gptref.cli.main``); one module per subcommand (``gptref.cli.commands`` lists
them); ``common`` holds the flags several share."""
