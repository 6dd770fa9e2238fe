"""Checks of a finished workflow run beyond presence and schemas (``saesteer check-run``):
``values`` (numbers that two files both hold agree, tau-b equals scipy's, lifts their
definition, caches their checksums), ``health`` (every SAE is a working SAE). Each check is a
function of a :class:`context.RunContext` returning one line per problem, naming the file."""
