"""Adapters shipped with the suite: thin modules that expose an implementation's functions
under the names and signatures the suite calls (see ``gptref.conformance.impl.KNOWN``)."""
